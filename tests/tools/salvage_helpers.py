"""Helpers for salvage tests: canonical dumps of recovered trees and of expected losses.

The canonical dump format is the oracle's (`B path seq` / `K path key value`),
so what salvage recovers from raw pages can be compared with what real bbolt
reads from the same file.
"""

from __future__ import annotations

import struct
from typing import Iterable, Optional

from boltimages.tools import rawpages
from tests.oracle import value_repr


def dump_tree(root: rawpages.Bucket) -> list[str]:
    out: list[str] = []
    for key in sorted(set(root.buckets)):
        _dump(out, root.buckets[key], [key.hex()])
    return out


def _dump(out: list[str], bucket: rawpages.Bucket, path: list[str]) -> None:
    out.append(f"B {'/'.join(path)} {bucket.sequence}")
    for key in sorted(set(bucket.values) | set(bucket.buckets)):
        if key in bucket.buckets:
            _dump(out, bucket.buckets[key], path + [key.hex()])
        else:
            out.append(f"K {'/'.join(path)} {key.hex()} {value_repr(bucket.values[key])}")


def read_intact(data: bytes, slot: Optional[int] = None) -> rawpages.Walk:
    """Tree of an undamaged file, from its newest meta or the given meta slot."""
    raw = rawpages.RawFile(data)
    meta = raw.valid_metas()[0] if slot is None else raw.metas[slot]
    walk = rawpages.TolerantReader(raw, meta).read()
    assert not walk.losses, walk.losses
    return walk


def expected_after_losing(data: bytes, lost_pages: Iterable[int], slot: Optional[int] = None) -> list[str]:
    """Dump of the intact file minus every entry stored on lost leaf pages (and what is below them)."""
    walk = read_intact(data, slot)
    lost = set(lost_pages)
    gone_prefixes = [tuple(path) + (key,) for (path, key), pgid in walk.page_of.items() if pgid in lost]
    gone_exact = {(path, key) for (path, key), pgid in walk.page_of.items() if pgid in lost}
    root = walk.root

    def prune(bucket: rawpages.Bucket, path: tuple[bytes, ...]) -> None:
        for key in list(bucket.values):
            if (path, key) in gone_exact:
                del bucket.values[key]
        for key in list(bucket.buckets):
            if (path, key) in gone_exact:
                del bucket.buckets[key]
            else:
                prune(bucket.buckets[key], path + (key,))

    prune(root, ())
    assert gone_prefixes is not None
    return dump_tree(root)


def page_header(data: bytes, pgid: int, page_size: int) -> tuple[int, int, int, int]:
    return struct.unpack_from("<QHHI", data, pgid * page_size)


def pages_of_kind(data: bytes, flag: int, meta: Optional[rawpages.Meta] = None) -> list[int]:
    """Reachable pages of one kind (branch/leaf) in an intact file."""
    raw = rawpages.RawFile(data)
    walk = read_intact(data)
    out = []
    for pgid in sorted(walk.visited):
        pid, flags, _count, _ov = page_header(data, pgid, raw.page_size)
        if pid == pgid and flags == flag:
            out.append(pgid)
    return out
