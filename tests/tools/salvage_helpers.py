"""Helpers for salvage tests: canonical dumps of recovered trees and of expected losses.

The canonical dump format is the oracle's (`B path seq` / `K path key value`),
so what salvage recovers from raw pages can be compared with what real bbolt
reads from the same file.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
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


def unsequenced(lines: Iterable[str]) -> set[str]:
    """Dump lines without bucket sequences: a bucket put back from its own pages lost its
    sequence with the header on the damaged page (it comes back as 0)."""
    return {line.rsplit(" ", 1)[0] if line.startswith("B ") else line for line in lines}


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


# --- scoring a salvage against the intact file ---------------------------------

#: one record: (bucket path, key, value; None for a sub-bucket)
Record = tuple[tuple[bytes, ...], bytes, Optional[bytes]]
LOST_AND_FOUND = b"lost+found"


def records_by_page(data: bytes) -> dict[Record, int]:
    """Every record of the newest commit of an intact file, with the page it lies on.

    A record inside an inline bucket lies on the page holding that bucket;
    a record on an overflow run lies on the run's first page.
    """
    walk = read_intact(data)

    def home(path: tuple[bytes, ...], key: bytes) -> int:
        pgid = walk.page_of[(path, key)]
        while pgid is None:
            path, key = path[:-1], path[-1]
            pgid = walk.page_of[(path, key)]
        return pgid

    out: dict[Record, int] = {}

    def visit(bucket: rawpages.Bucket, path: tuple[bytes, ...]) -> None:
        for key, value in bucket.values.items():
            out[(path, key, value)] = home(path, key)
        for key, sub in bucket.buckets.items():
            out[(path, key, None)] = home(path, key)
            visit(sub, path + (key,))

    visit(walk.root, ())
    return out


def tree_records(root: rawpages.Bucket, path: tuple[bytes, ...] = ()) -> set[Record]:
    out: set[Record] = set()
    for key, value in root.values.items():
        out.add((path, key, value))
    for key, sub in root.buckets.items():
        out.add((path, key, None))
        out |= tree_records(sub, path + (key,))
    return out


def run_starts(data: bytes) -> dict[int, int]:
    """Page id -> first page of the tree page run covering it (tree pages of the newest commit)."""
    raw = rawpages.RawFile(data)
    walk = read_intact(data)
    out = {}
    for pgid in walk.visited:
        pid, _flags, _count, overflow = page_header(data, pgid, raw.page_size)
        if pid == pgid:
            for p in range(pgid, pgid + overflow + 1):
                out[p] = pgid
    return out


@dataclass
class Score:
    """Records on intact pages, and where salvage put them."""

    intact: int
    placed: int
    in_lost_and_found: int
    missing: list[Record]
    #: records salvage put in the tree that the newest commit does not hold there
    wrong: list[Record]

    def __str__(self) -> str:
        return (f"{self.placed + self.in_lost_and_found}/{self.intact} recovered "
                f"({self.placed} in place, {self.in_lost_and_found} in lost+found)")


def score(original: bytes, lost_pages: Iterable[int], tree: rawpages.Bucket) -> Score:
    records = records_by_page(original)
    lost = set(lost_pages)
    intact = {r for r, pgid in records.items() if pgid not in lost}
    shelf = tree.buckets.get(LOST_AND_FOUND)
    rest = rawpages.Bucket(tree.sequence, dict(tree.values),
                           {k: v for k, v in tree.buckets.items() if k != LOST_AND_FOUND})
    got = tree_records(rest)
    shelved = {(key, value) for _path, key, value in tree_records(shelf)} if shelf is not None else set()
    placed = intact & got
    in_lf = {r for r in intact - got if (r[1], r[2]) in shelved}
    missing = sorted(intact - got - in_lf)
    wrong = sorted(got - set(records))
    return Score(len(intact), len(placed), len(in_lf), missing, wrong)
