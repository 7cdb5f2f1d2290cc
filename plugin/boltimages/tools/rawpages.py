"""A tolerant, read-only reader of bbolt files, page by page, in pure Python.

The engine refuses a damaged file (that is its job); ``salvage`` needs the
opposite: read whatever still makes sense, skip what does not, and say
exactly what was skipped and where. Nothing here trusts the file: every page
id, offset and length is checked against the file before it is used, a page
is never visited twice (cycles), and recursion depth is bounded.

Layout facts (bbolt 1.3.6, page.go): 16-byte page header
{id u64, flags u16, count u16, overflow u32}; metas in pages 0 and 1 with an
FNV-1a checksum; branch elements {pos u32, ksize u32, pgid u64}; leaf
elements {flags u32, pos u32, ksize u32, vsize u32}; a sub-bucket value is
{root u64, sequence u64} followed, when root == 0, by an inline leaf page.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Iterator, Optional

PAGE_HEADER = struct.Struct("<QHHI")
PAGE_HEADER_SIZE = PAGE_HEADER.size
BRANCH_ELEMENT = struct.Struct("<IIQ")
LEAF_ELEMENT = struct.Struct("<IIII")
ELEMENT_SIZE = 16
META_BODY = struct.Struct("<IIIIQQQQQQ")  # magic .. txid, checksum
BUCKET_HEADER = struct.Struct("<QQ")

FLAG_BRANCH = 0x01
FLAG_LEAF = 0x02
FLAG_META = 0x04
FLAG_FREELIST = 0x10
LEAF_FLAG_BUCKET = 0x01

MAGIC = 0xED0CDAED
FORMAT_VERSION = 2
NO_FREELIST = 0xFFFFFFFFFFFFFFFF
#: page sizes worth trying when meta 0 cannot tell us (bbolt files use the OS
#: page size unless created otherwise; 4 KiB first as the common case)
CANDIDATE_PAGE_SIZES = (4096, 8192, 16384, 65536, 1024, 2048, 32768)
#: loss reason for a page reached a second time (a cycle, or a page read already)
ALREADY_USED = "page already used elsewhere in the tree"
#: deeper than any real file (bbolt trees of 2^64 keys are ~20 levels deep per bucket)
MAX_DEPTH = 64


def fnv1a64(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for byte in data:
        h ^= byte
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


@dataclass
class Meta:
    slot: int
    page_size: int
    root: int
    freelist: int
    pgid: int
    txid: int
    valid: bool
    problem: str = ""


@dataclass
class Loss:
    """Something that could not be read: where it was and what it covered."""

    path: tuple[bytes, ...]
    pgid: Optional[int]
    reason: str
    #: key range of the lost subtree as the parent branch described it (lo inclusive, hi exclusive)
    lo: Optional[bytes] = None
    hi: Optional[bytes] = None
    #: the other children of the branch that pointed here (tells whether the lost page was a leaf)
    siblings: tuple[int, ...] = ()

    def describe(self) -> str:
        where = "/".join(p.decode("utf-8", "backslashreplace") for p in self.path) or "(root)"
        page = f"page {self.pgid}" if self.pgid is not None else "inline bucket"
        rng = ""
        if self.lo is not None or self.hi is not None:
            lo = _show(self.lo) if self.lo is not None else "start"
            hi = _show(self.hi) if self.hi is not None else "end"
            rng = f", keys [{lo} .. {hi})"
        return f"{where}: {page}: {self.reason}{rng}"


def _show(key: bytes) -> str:
    return repr(key.decode("utf-8", "backslashreplace"))


@dataclass
class Bucket:
    """A recovered bucket: plain values, nested buckets, sequence."""

    sequence: int = 0
    values: dict[bytes, bytes] = field(default_factory=dict)
    buckets: dict[bytes, "Bucket"] = field(default_factory=dict)

    def count(self) -> int:
        return len(self.values) + sum(1 + b.count() for b in self.buckets.values())


class PageError(Exception):
    """One page does not make sense; the text says why."""


class RawFile:
    """The bytes of a bbolt file plus the checks needed to read pages safely."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.metas = [self._read_meta(slot) for slot in (0, 1)]
        self.page_size = self._choose_page_size()

    # --- metas ------------------------------------------------------------
    def _meta_at(self, offset: int, slot: int, page_size: int) -> Meta:
        end = offset + PAGE_HEADER_SIZE + META_BODY.size
        if end > len(self.data):
            return Meta(slot, page_size, 0, 0, 0, 0, False, "past the end of the file")
        body = self.data[offset + PAGE_HEADER_SIZE:end]
        magic, version, psize, _flags, root, _seq, freelist, pgid, txid, checksum = META_BODY.unpack(body)
        meta = Meta(slot, psize, root, freelist, pgid, txid, False)
        _pid, pflags, _count, _overflow = PAGE_HEADER.unpack_from(self.data, offset)
        if magic != MAGIC:
            meta.problem = "bad magic"
        elif version != FORMAT_VERSION:
            meta.problem = f"format version {version}"
        elif checksum != 0 and checksum != fnv1a64(body[:56]):
            meta.problem = "checksum mismatch"
        elif pflags != FLAG_META:
            meta.problem = f"page flags {pflags:#x}, not meta"
        elif psize < 512 or psize & (psize - 1) or (slot == 1 and psize != page_size):
            meta.problem = f"page size {psize} does not fit"
        elif pgid < 4 or root < 2 or root >= pgid:
            meta.problem = f"root {root} / high water mark {pgid} out of range"
        else:
            meta.valid = True
        return meta

    def _read_meta(self, slot: int) -> Meta:
        if slot == 0:
            return self._meta_at(0, 0, 0)
        # meta 1 sits at offset page_size; try the size meta 0 names first
        first = self._meta_at(0, 0, 0)
        sizes = ([first.page_size] if first.valid else []) + list(CANDIDATE_PAGE_SIZES)
        best = None
        for size in sizes:
            meta = self._meta_at(size, 1, size)
            if meta.valid:
                return meta
            best = best or meta
        assert best is not None
        best.problem = best.problem or "not found"
        return best

    def _choose_page_size(self) -> int:
        for meta in self.metas:
            if meta.valid:
                return meta.page_size
        size = detect_page_size(self.data)
        if size is None:
            raise PageError("neither meta page is valid and no page carries its own id: "
                            "not a bbolt file, or nothing of it is left")
        return size

    def valid_metas(self) -> list[Meta]:
        """Valid metas, newest first."""
        return sorted((m for m in self.metas if m.valid), key=lambda m: -m.txid)

    # --- pages ------------------------------------------------------------
    def page_count(self) -> int:
        return len(self.data) // self.page_size

    def page(self, pgid: int, hwm: int) -> tuple[int, int, int, memoryview]:
        """(flags, count, overflow, bytes of the whole run) of page pgid, checked."""
        if pgid < 2 or pgid >= hwm:
            raise PageError(f"page id {pgid} outside [2, {hwm})")
        offset = pgid * self.page_size
        if offset + PAGE_HEADER_SIZE > len(self.data):
            raise PageError("page lies past the end of the file (truncated)")
        pid, flags, count, overflow = PAGE_HEADER.unpack_from(self.data, offset)
        if pid != pgid:
            raise PageError(f"header names page {pid}")
        if pgid + overflow >= hwm:
            raise PageError(f"overflow {overflow} runs past the high water mark")
        end = offset + (overflow + 1) * self.page_size
        if end > len(self.data):
            raise PageError("page run lies past the end of the file (truncated)")
        return flags, count, overflow, memoryview(self.data)[offset:end]

    def freelist(self, meta: Meta) -> Optional[set[int]]:
        """Free page ids recorded by meta, or None when absent or unreadable."""
        if meta.freelist == NO_FREELIST:
            return None
        try:
            flags, count, _ov, buf = self.page(meta.freelist, meta.pgid)
        except PageError:
            return None
        if flags != FLAG_FREELIST:
            return None
        start = PAGE_HEADER_SIZE
        if count == 0xFFFF:
            if len(buf) < 24:
                return None
            count = struct.unpack_from("<Q", buf, 16)[0]
            start = 24
        if start + 8 * count > len(buf):
            return None
        return set(struct.unpack_from(f"<{count}Q", buf, start))


def detect_page_size(data: bytes) -> Optional[int]:
    """The page size under which most pages carry their own id in their header, or None.

    Used when neither meta page can say: at the wrong size, page p's offset
    lands on another page's header (id != p) or in the middle of one.
    """
    best, best_hits = None, 0
    for size in CANDIDATE_PAGE_SIZES:
        pages = min(len(data) // size, 4096)
        hits = 0
        for pgid in range(2, pages):
            pid, flags, _count, _ov = PAGE_HEADER.unpack_from(data, pgid * size)
            if pid == pgid and flags in (FLAG_BRANCH, FLAG_LEAF, FLAG_FREELIST):
                hits += 1
        if hits > best_hits:
            best, best_hits = size, hits
    return best if best_hits >= 2 else None


def sub_bucket_root(flags: int, value: bytes) -> int:
    """The root page of the sub-bucket a leaf element holds; 0 when the element is a plain
    value, an inline bucket, or a bucket header too short to read."""
    if flags & LEAF_FLAG_BUCKET and len(value) >= BUCKET_HEADER.size:
        return BUCKET_HEADER.unpack_from(value, 0)[0]
    return 0


def parse_leaf(buf: memoryview, count: int) -> list[tuple[int, bytes, bytes]]:
    """Elements of a leaf page image: (flags, key, value); raises PageError on any inconsistency."""
    if PAGE_HEADER_SIZE + count * ELEMENT_SIZE > len(buf):
        raise PageError(f"{count} leaf elements do not fit the page")
    out = []
    prev: Optional[bytes] = None
    for i in range(count):
        at = PAGE_HEADER_SIZE + i * ELEMENT_SIZE
        flags, pos, ksize, vsize = LEAF_ELEMENT.unpack_from(buf, at)
        start = at + pos
        if flags not in (0, LEAF_FLAG_BUCKET):
            raise PageError(f"leaf element {i} has flags {flags:#x}")
        if ksize == 0 or start + ksize + vsize > len(buf) or pos < ELEMENT_SIZE * (count - i):
            raise PageError(f"leaf element {i} points outside the page")
        key = bytes(buf[start:start + ksize])
        if prev is not None and key <= prev:
            raise PageError(f"leaf keys out of order at element {i}")
        prev = key
        out.append((flags, key, bytes(buf[start + ksize:start + ksize + vsize])))
    return out


def parse_branch(buf: memoryview, count: int) -> list[tuple[bytes, int]]:
    if count == 0 or PAGE_HEADER_SIZE + count * ELEMENT_SIZE > len(buf):
        raise PageError(f"{count} branch elements do not fit the page")
    out = []
    prev: Optional[bytes] = None
    for i in range(count):
        at = PAGE_HEADER_SIZE + i * ELEMENT_SIZE
        pos, ksize, child = BRANCH_ELEMENT.unpack_from(buf, at)
        start = at + pos
        if ksize == 0 or start + ksize > len(buf) or pos < ELEMENT_SIZE * (count - i):
            raise PageError(f"branch element {i} points outside the page")
        key = bytes(buf[start:start + ksize])
        if prev is not None and key <= prev:
            raise PageError(f"branch keys out of order at element {i}")
        prev = key
        out.append((key, child))
    return out


@dataclass
class Walk:
    """Result of reading a tree tolerantly."""

    root: Bucket
    losses: list[Loss] = field(default_factory=list)
    visited: set[int] = field(default_factory=set)
    #: page ids referenced more than once (cycles, cross-linked trees)
    shared: list[int] = field(default_factory=list)
    #: (bucket path, key) -> page id of the leaf holding it (None: inline bucket)
    page_of: dict[tuple[tuple[bytes, ...], bytes], Optional[int]] = field(default_factory=dict)
    #: page id -> id of the page that points at it (branch, or leaf holding a bucket header)
    parent: dict[int, Optional[int]] = field(default_factory=dict)
    #: page id -> bucket path the page belongs to
    page_path: dict[int, tuple[bytes, ...]] = field(default_factory=dict)
    #: bucket path -> page flags of the bucket's root page
    root_flags: dict[tuple[bytes, ...], int] = field(default_factory=dict)


class TolerantReader:
    """Reads every bucket reachable from one meta, skipping damaged pages."""

    def __init__(self, raw: RawFile, meta: Meta) -> None:
        self.raw = raw
        self.meta = meta
        self.walk = Walk(Bucket())
        self._from: Optional[int] = None
        self._leaf_pgid: Optional[int] = None
        self._siblings: tuple[int, ...] = ()

    def read(self) -> Walk:
        self._tree(self.meta.root, (), self.walk.root, None, None, 0)
        return self.walk

    def read_subtree(self, pgid: int, into: Bucket) -> Walk:
        """Read the tree below page pgid (a bucket's root or any page of one) into `into`."""
        self._tree(pgid, (), into, None, None, 0)
        return self.walk

    def _lose(self, path: tuple[bytes, ...], pgid: Optional[int], reason: str,
              lo: Optional[bytes], hi: Optional[bytes]) -> None:
        self.walk.losses.append(Loss(path, pgid, reason, lo, hi, self._siblings))

    def _tree(self, pgid: int, path: tuple[bytes, ...], into: Bucket,
              lo: Optional[bytes], hi: Optional[bytes], depth: int) -> None:
        if depth > MAX_DEPTH:
            self._lose(path, pgid, "tree deeper than any real file (loop?)", lo, hi)
            return
        if pgid in self.walk.visited:
            self.walk.shared.append(pgid)
            self._lose(path, pgid, ALREADY_USED, lo, hi)
            return
        try:
            flags, count, overflow, buf = self.raw.page(pgid, self.meta.pgid)
            if flags == FLAG_BRANCH:
                children = parse_branch(buf, count)
            elif flags == FLAG_LEAF:
                elements = parse_leaf(buf, count)
            else:
                raise PageError(f"page type {flags:#x} where a branch or leaf belongs")
            keys = [key for key, _child in children] if flags == FLAG_BRANCH else [e[1] for e in elements]
            if keys and ((lo is not None and keys[0] < lo) or (hi is not None and keys[-1] >= hi)):
                # a branch pointing at the wrong page (a flipped bit in the child id): that page's
                # own place is elsewhere, and the right child turns up as an unreachable page
                raise PageError("its keys lie outside the range its parent branch gives it (wrong child pointer)")
        except PageError as exc:
            self._lose(path, pgid, str(exc), lo, hi)
            return
        self.walk.visited.update(range(pgid, pgid + overflow + 1))
        self.walk.parent.setdefault(pgid, self._from)
        self.walk.page_path.setdefault(pgid, path)
        if lo is None and hi is None:
            self.walk.root_flags.setdefault(path, flags)
        if flags == FLAG_BRANCH:
            kids = tuple(child for _key, child in children)
            for i, (key, child) in enumerate(children):
                self._from = pgid
                self._siblings = tuple(k for k in kids if k != child)
                child_hi = children[i + 1][0] if i + 1 < len(children) else hi
                self._tree(child, path, into, key if i else lo, child_hi, depth + 1)
        else:
            self.leaf_elements(elements, path, into, depth, pgid)

    def leaf_elements(self, elements: list[tuple[int, bytes, bytes]], path: tuple[bytes, ...],
                      into: Bucket, depth: int, pgid: Optional[int] = None) -> None:
        for flags, key, value in elements:
            self._leaf_pgid = pgid
            self.walk.page_of[(path, key)] = pgid
            if not flags & LEAF_FLAG_BUCKET:
                into.values[key] = value
                continue
            sub_path = path + (key,)
            if len(value) < BUCKET_HEADER.size:
                self._lose(sub_path, None, "bucket header shorter than 16 bytes", None, None)
                continue
            root, seq = BUCKET_HEADER.unpack_from(value, 0)
            child = Bucket(sequence=seq)
            into.buckets[key] = child
            if root != 0:
                self._from = self._leaf_pgid
                self._siblings = ()
                self._tree(root, sub_path, child, None, None, depth + 1)
                continue
            self._siblings = ()
            inline = memoryview(value)[BUCKET_HEADER.size:]
            try:
                if len(inline) < PAGE_HEADER_SIZE:
                    raise PageError("inline bucket page shorter than a page header")
                _pid, pflags, pcount, _ov = PAGE_HEADER.unpack_from(inline, 0)
                if pflags != FLAG_LEAF:
                    raise PageError(f"inline bucket page has flags {pflags:#x}")
                self.leaf_elements(parse_leaf(inline, pcount), sub_path, child, depth + 1)
            except PageError as exc:
                self._lose(sub_path, None, str(exc), None, None)


def orphan_leaves(raw: RawFile, meta: Meta, visited: set[int]) -> Iterator[tuple[int, list[tuple[int, bytes, bytes]]]]:
    """Leaf pages below the high water mark that no tree reaches and the freelist does not list.

    Those are the pages a damaged branch used to point at (or pages leaked by
    an older bug); free pages are skipped because they hold stale versions.
    """
    free = raw.freelist(meta) or set()
    limit = min(meta.pgid, raw.page_count())
    skip = set(visited) | free | {0, 1}
    if meta.freelist != NO_FREELIST:
        skip.add(meta.freelist)
    pgid = 2
    while pgid < limit:
        if pgid in skip:
            pgid += 1
            continue
        try:
            flags, count, overflow, buf = raw.page(pgid, meta.pgid)
        except PageError:
            pgid += 1
            continue
        if flags == FLAG_FREELIST:
            pgid += overflow + 1
            continue
        if flags != FLAG_LEAF or count == 0:
            pgid += 1
            continue
        try:
            elements = parse_leaf(buf, count)
        except PageError:
            pgid += 1
            continue
        yield pgid, elements
        pgid += overflow + 1
