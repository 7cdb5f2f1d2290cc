"""Files written by real bbolt 1.3.6 must read back identically through the
engine, pass the engine's check, and stay valid for bbolt after the engine
writes to them."""

from __future__ import annotations

import struct

import pytest

from tests.oracle import FREELIST_NONE, current_meta, dump_file, first_dump_difference, value_repr

pytestmark = pytest.mark.compat

# name, page size, gen options
CASES = [
    ("4k", 4096, {}),
    ("8k", 8192, {}),
    ("16k", 16384, {}),
    ("1k", 1024, {"txs": 20, "ops": 150}),
    ("4k-big-values", 4096, {"big_values": True, "txs": 12, "ops": 60}),
    ("16k-big-values", 16384, {"big_values": True, "txs": 12, "ops": 60}),
    ("1k-large-freelist", 1024, {"large_freelist": True, "txs": 4, "ops": 80}),
    ("4k-no-freelist-sync", 4096, {"no_freelist_sync": True}),
    ("1k-no-freelist-sync", 1024, {"no_freelist_sync": True, "txs": 20, "ops": 150}),
]


def _freelist_count(path, meta) -> int:
    """Number of ids on the file's freelist page (decoded by hand)."""
    with open(path, "rb") as f:
        f.seek(meta.freelist * meta.page_size)
        head = f.read(24)
    _pgid, flags, count, _overflow = struct.unpack_from("<QHHI", head)
    assert flags == 0x10, f"page {meta.freelist} is not a freelist page (flags {flags:#x})"
    return struct.unpack_from("<Q", head, 16)[0] if count == 0xFFFF else count


@pytest.mark.parametrize("name,page_size,options", CASES, ids=[c[0] for c in CASES])
def test_engine_reads_bbolt_file(oracle, tmp_path, name, page_size, options):
    from boltimages import bolt

    seed = sum(name.encode())
    path = tmp_path / f"{name}.db"
    oracle.gen(path, seed, page_size, **options)
    assert oracle.check(path) == [], f"{name}: the oracle's own file fails bbolt's Check"
    meta = current_meta(path)
    if options.get("no_freelist_sync"):
        assert meta.freelist == FREELIST_NONE
    if options.get("large_freelist"):
        assert _freelist_count(path, meta) >= 0xFFFF, "generator did not reach the large-freelist form"

    expected = oracle.dump(path)
    diff = first_dump_difference(dump_file(path), expected)
    assert diff is None, f"{name} (gen seed {seed}): engine reads different content: {diff}"
    assert bolt.check_file(path) == [], f"{name} (gen seed {seed}): engine check flags a bbolt file"

    with bolt.open(path, read_only=True) as db:
        assert db.page_size == page_size
        assert db.info()["txid"] == meta.txid

    # Write through the engine, then let bbolt judge the result.
    with bolt.open(path) as db:
        with db.begin(write=True) as tx:
            bucket = tx.create_bucket_if_not_exists(b"engine-was-here")
            bucket.put(b"k", b"v" * 3000)
            bucket.put(b"small", b"")
    after = current_meta(path)
    assert after.txid == meta.txid + 1
    if options.get("no_freelist_sync"):
        assert after.freelist == FREELIST_NONE, "freelist='keep' must keep a NoFreelistSync file so"
    assert oracle.check(path) == [], f"{name} (gen seed {seed}): bbolt Check fails after an engine write"
    want = oracle.dump(path)
    mine = b"engine-was-here".hex()
    added = [line for line in want if line.split(" ")[1].split("/")[0] == mine]
    assert added == [f"B {mine} 0", f"K {mine} 6b {value_repr(b'v' * 3000)}", f"K {mine} 736d616c6c "]
    assert [line for line in want if line not in added] == expected
    assert dump_file(path) == want


def test_engine_reads_large_freelist_after_reopen_and_reuses_pages(oracle, tmp_path):
    """The 0xFFFF freelist form: the engine must load every id and reuse them
    rather than growing the file."""
    from boltimages import bolt

    path = tmp_path / "lf.db"
    oracle.gen(path, 99, 1024, large_freelist=True, txs=2, ops=20)
    before = current_meta(path)
    free_ids = _freelist_count(path, before)
    with bolt.open(path) as db:
        with db.begin(write=True) as tx:
            tx.create_bucket_if_not_exists(b"reuse").put(b"v", bytes(512 * 1024))
    after = current_meta(path)
    assert after.pgid == before.pgid, (
        f"engine grew the file ({before.pgid} -> {after.pgid}) although {free_ids} pages were free")
    assert oracle.check(path) == []
    assert dump_file(path) == oracle.dump(path)
