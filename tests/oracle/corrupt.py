"""Seeded mutator of bbolt files for the corruption fuzz tests.

It knows just enough of the format (bbolt 1.3.6, page.go and node.go)
to aim damage at the places a parser must check: page headers, element
arrays, branch child ids, inline bucket images, the freelist, and meta
fields with a recomputed checksum (so a reader cannot lean on the checksum).
"""

from __future__ import annotations

import random
import struct
from dataclasses import dataclass

from tests.oracle import fnv1a64

BRANCH, LEAF, META, FREELIST = 0x01, 0x02, 0x04, 0x10
HUGE = [0xFFFF, 0xFFFFFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFFFFFFFFFF, 1 << 40, 1 << 32, 0xFFFE]


@dataclass
class PageRef:
    id: int
    flags: int
    count: int
    overflow: int


def parse_pages(data: bytes, page_size: int) -> list[PageRef]:
    """Page headers of every page start, following overflow runs."""
    out = []
    total = len(data) // page_size
    i = 0
    while i < total:
        off = i * page_size
        _pid, flags, count, overflow = struct.unpack_from("<QHHI", data, off)
        out.append(PageRef(i, flags, count, overflow))
        i += 1 + (overflow if flags in (BRANCH, LEAF, FREELIST) and overflow < total else 0)
    return out


def page_size_of(data: bytes) -> int:
    if len(data) >= 28:
        size = struct.unpack_from("<I", data, 24)[0]
        if size in (512, 1024, 2048, 4096, 8192, 16384, 32768, 65536):
            return size
    return 4096


def _rewrite_meta(buf: bytearray, page_size: int, slot: int, rng: random.Random) -> str:
    off = slot * page_size
    if len(buf) < off + 80:
        return "meta rewrite skipped (short file)"
    fields = {"page_size": (24, "<I"), "flags": (28, "<I"), "root": (32, "<Q"), "freelist": (48, "<Q"),
              "pgid": (56, "<Q"), "txid": (64, "<Q"), "version": (20, "<I")}
    name = rng.choice(list(fields))
    at, fmt = fields[name]
    pgid = struct.unpack_from("<Q", buf, off + 56)[0]
    choices = [0, 1, 2, 3, pgid, pgid - 1, pgid + 1, rng.randrange(0, max(pgid, 1))] + HUGE
    value = rng.choice(choices) & (0xFFFFFFFF if fmt == "<I" else 0xFFFFFFFFFFFFFFFF)
    if name == "page_size":
        value = rng.choice([0, 1, 16, 512, 3000, 4095, 1 << 20, 1 << 31, page_size * 2, page_size // 2])
    struct.pack_into(fmt, buf, off + at, value)
    # Keep the meta "valid" so the reader has to check the field itself.
    struct.pack_into("<Q", buf, off + 72, fnv1a64(bytes(buf[off + 16:off + 72])))
    return f"meta {slot} {name}={value:#x} (checksum fixed)"


def mutate(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    """One damaged copy of `data` and a description of the damage."""
    buf = bytearray(data)
    ps = page_size_of(data)
    # Aim at the used part of the file: bbolt files end in zero pages past the
    # high water mark that no reader ever looks at.
    hwm = max([struct.unpack_from("<Q", data, s * ps + 56)[0] for s in (0, 1)
               if len(data) >= s * ps + 64] or [1])
    used = min(len(data), max(hwm, 2) * ps)
    pages = parse_pages(data[:used], ps)
    by_kind = {k: [p for p in pages if p.flags == k] for k in (BRANCH, LEAF, META, FREELIST)}
    kind = rng.choice(["bitflip", "bitflip_header", "zero_page", "page_header", "truncate",
                       "element", "branch_cycle", "freelist", "meta", "meta", "inline",
                       "splice", "both_metas"])
    npages = max(used // ps, 1)
    if not pages or len(buf) < 2 * ps:
        # Too short to aim at anything (an earlier mutation truncated it).
        if not buf:
            return bytes(buf), "empty file (unchanged)"
        pos = rng.randrange(len(buf))
        buf[pos] ^= 1 << rng.randrange(8)
        return bytes(buf), f"short file: bit flip at {pos}"

    if kind == "bitflip":
        n = rng.randint(1, 20)
        for _ in range(n):
            pos = rng.randrange(max(used, 1))
            if pos < len(buf):
                buf[pos] ^= 1 << rng.randrange(8)
        return bytes(buf), f"{n} random bit flips"
    if kind == "bitflip_header":
        page = rng.choice(pages)
        pos = page.id * ps + rng.randrange(min(64 + 16 * page.count, ps))
        buf[pos] ^= 1 << rng.randrange(8)
        return bytes(buf), f"bit flip at {pos} in page {page.id}"
    if kind == "zero_page":
        pid = rng.choice([0, 1, rng.randrange(npages), rng.randrange(npages)])
        buf[pid * ps:(pid + 1) * ps] = bytes(len(buf[pid * ps:(pid + 1) * ps]))
        return bytes(buf), f"zeroed page {pid}"
    if kind == "both_metas":
        for slot in (0, 1):
            buf[slot * ps + 16:slot * ps + 80] = rng.randbytes(64)
        return bytes(buf), "both metas garbage"
    if kind == "page_header":
        page = rng.choice(pages[2:] or pages)
        off = page.id * ps
        field = rng.choice(["id", "flags", "count", "overflow", "all"])
        if field in ("id", "all"):
            struct.pack_into("<Q", buf, off, rng.choice([0, 1, page.id + 1] + HUGE))
        if field in ("flags", "all"):
            struct.pack_into("<H", buf, off + 8, rng.choice([0, BRANCH, LEAF, META, FREELIST, 0x03, 0xFFFF]))
        if field in ("count", "all"):
            struct.pack_into("<H", buf, off + 10, rng.choice([0, 1, min(page.count + 1, 0xFFFF), 0xFFFE, 0xFFFF]))
        if field in ("overflow", "all"):
            struct.pack_into("<I", buf, off + 12, rng.choice([1, npages, 0x7FFFFFFF, 0xFFFFFFFF]))
        return bytes(buf), f"page {page.id} header field {field}"
    if kind == "truncate":
        length = rng.choice([0, 1, 100, ps, 2 * ps - 1, 2 * ps, 3 * ps, rng.randrange(len(buf) + 1),
                             rng.randrange(len(buf) + 1) // ps * ps])
        return bytes(buf[:length]), f"truncated to {length}"
    if kind == "element" and (by_kind[LEAF] or by_kind[BRANCH]):
        page = rng.choice(by_kind[LEAF] + by_kind[BRANCH])
        if page.count == 0:
            return bytes(buf), f"element: page {page.id} empty (unchanged)"
        i = rng.randrange(page.count)
        off = page.id * ps + 16 + 16 * i
        if page.flags == LEAF:
            field, at = rng.choice([("flags", 0), ("pos", 4), ("ksize", 8), ("vsize", 12)])
        else:
            field, at = rng.choice([("pos", 0), ("ksize", 4)])
        value = rng.choice([0, 1, 0xFFFF, 0xFFFFFFFF, 0x7FFFFFFF, ps, ps * (page.overflow + 1), rng.randrange(1 << 32)])
        struct.pack_into("<I", buf, off + at, value)
        return bytes(buf), f"page {page.id} element {i} {field}={value:#x}"
    if kind == "branch_cycle" and by_kind[BRANCH]:
        page = rng.choice(by_kind[BRANCH])
        i = rng.randrange(max(page.count, 1))
        target = rng.choice([page.id, 0, 1, 2, npages + 5, 0xFFFFFFFFFFFFFFFF]
                            + [p.id for p in rng.sample(pages, min(3, len(pages)))])
        struct.pack_into("<Q", buf, page.id * ps + 16 + 16 * i + 8, target)
        return bytes(buf), f"branch page {page.id} element {i} child -> {target}"
    if kind == "freelist" and by_kind[FREELIST]:
        page = rng.choice(by_kind[FREELIST])
        off = page.id * ps
        how = rng.choice(["count", "ids", "marker"])
        if how == "count":
            struct.pack_into("<H", buf, off + 10, rng.choice([0xFFFE, min(page.count + 5, 0xFFFF), 0x1000]))
        elif how == "marker":
            struct.pack_into("<H", buf, off + 10, 0xFFFF)
            struct.pack_into("<Q", buf, off + 16, rng.choice(HUGE + [0, 1, page.count + 100]))
        else:
            n = max(page.count, 1)
            for _ in range(rng.randint(1, 5)):
                j = rng.randrange(min(n, (ps - 16) // 8))
                struct.pack_into("<Q", buf, off + 16 + 8 * j,
                                 rng.choice([0, 1, 2, 3, npages + 1, rng.randrange(npages)] + HUGE))
        return bytes(buf), f"freelist page {page.id} {how}"
    if kind == "meta":
        what = _rewrite_meta(buf, ps, rng.randrange(2), rng)
        return bytes(buf), f"{what}; now {_describe_meta(buf, ps)}"
    if kind == "inline" and by_kind[LEAF]:
        # Find a sub-bucket element and damage its 16-byte header or inline page.
        for page in rng.sample(by_kind[LEAF], len(by_kind[LEAF])):
            base = page.id * ps
            for i in range(min(page.count, (ps - 16) // 16)):
                flags, pos, ksize, vsize = struct.unpack_from("<IIII", buf, base + 16 + 16 * i)
                if flags & 1 and vsize >= 16:
                    v = base + 16 + 16 * i + pos + ksize
                    if v + 16 > len(buf):
                        continue
                    root = struct.unpack_from("<Q", buf, v)[0]
                    if root == 0 and vsize >= 32 and rng.random() < 0.7:
                        at, fmt = rng.choice([(v + 16 + 10, "<H"), (v + 16 + 8, "<H"), (v + 16 + 32 + 4, "<I"),
                                              (v + 16 + 32 + 8, "<I")])
                        value = rng.choice([0xFFFF, 0xFFFFFFFF if fmt == "<I" else 0x1234, 3])
                        if at + struct.calcsize(fmt) <= len(buf):
                            struct.pack_into(fmt, buf, at, value)
                        return bytes(buf), f"inline bucket in page {page.id} element {i}: field@{at - v} = {value:#x}"
                    struct.pack_into("<Q", buf, v, rng.choice([page.id, 0, 1, 2, npages + 3] + HUGE))
                    return bytes(buf), f"bucket header in page {page.id} element {i}: root changed"
        return bytes(buf), "inline: no sub-bucket found (unchanged)"
    if kind == "splice" and len(pages) > 3:
        a, b = rng.sample(pages[2:], 2)
        buf[b.id * ps:(b.id + 1) * ps] = data[a.id * ps:(a.id + 1) * ps]
        return bytes(buf), f"page {a.id} copied over page {b.id}"
    # Fallback when the aimed structure is absent.
    pos = rng.randrange(max(used, 1))
    if pos < len(buf):
        buf[pos] ^= 0xFF
    return bytes(buf), f"{kind} not applicable; byte {pos} inverted"


def _describe_meta(buf: bytearray, ps: int) -> str:
    return "meta field rewritten with a valid checksum: " + ", ".join(
        f"slot {s}: root {struct.unpack_from('<Q', buf, s * ps + 32)[0]:#x} "
        f"freelist {struct.unpack_from('<Q', buf, s * ps + 48)[0]:#x} "
        f"pgid {struct.unpack_from('<Q', buf, s * ps + 56)[0]:#x} "
        f"page_size {struct.unpack_from('<I', buf, s * ps + 24)[0]:#x}"
        for s in (0, 1) if len(buf) >= s * ps + 80)
