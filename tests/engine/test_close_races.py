"""DB.close() from another thread while a long C call runs on the same file.

bolt.h promises that no order of calls from Python can cause a use-after-free.
Every long call (compaction, walks, packed scans, check) holds its
transaction's lock for its whole run, and bolt_close takes each open
transaction's lock before rolling it back, so close waits for the call to
finish, as bbolt's Close waits for open transactions. A compaction whose
destination is closed between two of its commits then fails with
DatabaseClosed, as bbolt's Compact fails at its next Begin.

Each test makes the overlap certain rather than likely: the long call is
caught mid-way (the destination's txid has moved, or a callback is running),
and the close is seen to have started (bolt_db_txid answers 0 once a close
has begun) before the long call is let go on.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Callable

import pytest

from boltimages import bolt
from boltimages._bolt import ffi, lib
from tests.helpers import wait_until

pytestmark = pytest.mark.threaded

DEADLINE = 60.0
VALUE = bytes(range(256)) * 2
# Small destination commits stretch the copy of big_source to ~0.2 s (against
# 0.05 s at 64 KiB) so the test thread reliably sees it mid-way.
COMMIT_BYTES = 4096


def wait_for(condition: Callable[[], bool], what: str) -> None:
    """Poll a condition with a deadline (no sleep stands in for an event)."""
    if not wait_until(condition, DEADLINE, interval=0.0005):
        raise AssertionError(f"timed out waiting for {what}")


def big_source(make_db: Callable[..., bolt.DB], keys: int = 40_000) -> bolt.DB:
    """About 20 MiB in one bucket with a nested bucket per 1,000 keys."""
    db = make_db("src.db", page_size=4096)
    with db.begin(write=True) as tx:
        top = tx.create_bucket(b"top")
        for start in range(0, keys, 1000):
            top.put_many((b"k%08d" % i, VALUE) for i in range(start, start + 1000))
            top.create_bucket(b"n%08d" % start).put(b"x", b"y")
    return db


class Runner(threading.Thread):
    """Runs fn in a thread, keeping its result or exception."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        super().__init__(daemon=True)
        self.fn = fn
        self.result: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self.fn()
        except BaseException as e:  # kept for the test to judge
            self.error = e

    def outcome(self) -> Any:
        self.join(DEADLINE)
        assert not self.is_alive(), "the call never returned"
        if self.error is not None:
            raise self.error
        return self.result


def closing(db: bolt.DB) -> Runner:
    """db.close() in its own thread, returned once the close has begun."""
    handle = db._handle()
    closer = Runner(db.close)
    closer.start()
    wait_for(lambda: lib.bolt_db_txid(handle) == 0, "the close to begin")
    return closer


def compaction_under_way(make_db) -> tuple:
    """(source, destination, destination's txid before, the running compaction), once the
    compaction has committed a few transactions and is still copying."""
    src = big_source(make_db)
    dst = make_db("dst.db", page_size=4096)
    start_txid = dst.txid
    src_handle, dst_handle = src._handle(), dst._handle()
    compact = Runner(lambda: bolt._check(lib.bolt_compact(dst_handle, src_handle, COMMIT_BYTES), "compact"))
    compact.start()
    wait_for(lambda: dst.txid >= start_txid + 3 or not compact.is_alive(), "the compaction to commit")
    assert compact.is_alive(), "the compaction ended before the test could overlap it; grow the source"
    return src, dst, start_txid, compact


def test_close_source_waits_for_the_compaction(make_db, tmp_path: Path):
    src, dst, start_txid, compact = compaction_under_way(make_db)
    src.close()  # returns only once the compaction has let go of the source
    assert lib.bolt_db_txid(dst._handle()) > start_txid + 3
    compact.outcome()
    with dst.begin() as tx:
        top = tx.bucket(b"top")
        assert top.get(b"k%08d" % 39_999) == VALUE
        assert top.bucket(b"n%08d" % 39_000).get(b"x") == b"y"
        assert tx.check() == []


def test_close_destination_ends_the_compaction_cleanly(make_db, tmp_path: Path):
    src, dst, start_txid, compact = compaction_under_way(make_db)
    dst.close()
    with pytest.raises(bolt.DatabaseClosed, match="destination database was closed"):
        compact.outcome()
    # What was committed before the close is a sound file, and the source is untouched.
    assert bolt.check_file(tmp_path / "dst.db") == []
    with src.begin() as tx:
        assert tx.bucket(b"top").get(b"k%08d" % 0) == VALUE


def test_compact_to_a_closed_source_is_a_clear_error(make_db, tmp_path: Path):
    src = big_source(make_db, keys=1000)
    handle = src._handle()
    src.close()
    with bolt.open(tmp_path / "dst.db", no_sync=True) as dst:
        with pytest.raises(bolt.DatabaseClosed, match="source database"):
            bolt._check(lib.bolt_compact(dst._handle(), handle, 0), "compact")


WALK_FN = "int(void *, uint32_t, const uint8_t *, uint32_t, const uint8_t *, uint32_t, int)"
ITEM_FN = "int(void *, const uint8_t *, uint32_t, const uint8_t *, uint32_t, int)"


@pytest.mark.parametrize("scan", ["walk", "cursor"])
def test_close_waits_for_a_scan(make_db, scan: str):
    """A walk (bolt_bucket_walk_each) or a cursor batch (bolt_cursor_next_each)
    holds its transaction for the whole C call: close begins during the
    first item, and the scan still reads every item from a live mapping."""
    src = big_source(make_db, keys=4000)
    tx = src.begin()
    top = tx.bucket(b"top")
    closer: list[Runner] = []
    seen: list[bytes] = []

    def visit(key: Any, key_len: int, value: Any, value_len: int) -> int:
        if not closer:
            closer.append(closing(src))
        if value != ffi.NULL:
            assert ffi.buffer(value, value_len)[:] in (VALUE, b"y")
        seen.append(ffi.buffer(key, key_len)[:])
        return 0

    if scan == "walk":
        @ffi.callback(WALK_FN)
        def on_entry(ctx, depth, key, key_len, value, value_len, bucket):  # type: ignore[no-untyped-def]
            return visit(key, key_len, value, value_len)

        bolt._check(lib.bolt_bucket_walk_each(top._b, 4, on_entry, ffi.NULL), "walk")
        assert len(seen) == 4000 + 2 * 4  # keys, nested buckets and their one key each
    else:
        @ffi.callback(ITEM_FN)
        def on_item(ctx, key, key_len, value, value_len, bucket):  # type: ignore[no-untyped-def]
            return visit(key, key_len, value, value_len)

        cursor = ffi.new("uint64_t[]", (lib.bolt_cursor_size() + 7) // 8)
        cur = ffi.cast("bolt_cursor *", cursor)
        bolt._check(lib.bolt_cursor_init(cur, top._b), "cursor")
        kv = ffi.new("bolt_kv *")
        n, end = ffi.new("size_t *"), ffi.new("int *")
        bolt._check(lib.bolt_cursor_first(cur, kv), "first")
        bolt._check(lib.bolt_cursor_next_each(cur, 1, 10_000, on_item, ffi.NULL, n, end), "scan")
        assert n[0] == len(seen) == 4000 + 4 and end[0] == 1
    closer[0].outcome()
    with pytest.raises(bolt.TxClosed):
        top.get(b"k%08d" % 0)


@pytest.mark.parametrize("write", [False, True])
def test_threads_share_one_transaction_until_close(make_db, write: bool):
    """bolt.h: concurrent calls on one transaction are serialised, and after
    close every call fails with TxClosed. Four threads share one transaction
    (reads, cursor moves, the tx's own facts; puts on a write tx) until a
    close, which each thread then sees as TxClosed and nothing else."""
    db = big_source(make_db, keys=2000)
    tx = db.begin(write=write)
    top = tx.bucket(b"top")
    workers = 4
    warmed = threading.Barrier(workers + 1)

    def work(n: int) -> int:
        calls = 0
        try:
            while True:
                key = b"k%08d" % ((n * 997 + calls) % 2000)
                assert top.get(key) in (VALUE, b"w")
                c = top.cursor()
                assert c.seek(key)[0] == key and c.next() is not None
                assert tx.size > 0
                if tx.closed:  # closed since the last call: the next one must say so
                    top.get(key)
                    raise AssertionError("a call on a closed transaction succeeded")
                if write:
                    top.put(key, b"w")
                calls += 1
                if calls == 50:
                    warmed.wait(DEADLINE)
        except bolt.TxClosed:
            assert calls >= 50 and tx.closed
            return calls

    runners = [Runner(lambda n=n: work(n)) for n in range(workers)]
    for r in runners:
        r.start()
    warmed.wait(DEADLINE)
    db.close()
    assert all(r.outcome() >= 50 for r in runners)


def test_path_walks_while_the_file_closes(make_db):
    """bolt_db_walk_path begins and ends its own transaction: threads walking
    a path while another closes the file each get the whole copy or
    DatabaseClosed, never a partial copy or freed memory."""
    db = big_source(make_db, keys=2000)
    path = [b"top", b"n%08d" % 1000]
    with db.begin() as tx:
        expected = tx.bucket(b"top").bucket(b"n%08d" % 1000).walk_bytes(1)
    handle = db._handle()
    blob = b"".join(path)
    lens = ffi.new("uint32_t[]", [len(p) for p in path])
    workers = 4
    warmed = threading.Barrier(workers + 1)

    def work() -> int:
        out, size = ffi.new("uint8_t **"), ffi.new("size_t *")
        calls = 0
        while True:
            status = lib.bolt_db_walk_path(handle, len(path), blob, lens, 1, out, size)
            if status == lib.BOLT_ERR_DB_CLOSED:
                return calls
            assert status == lib.BOLT_OK, ffi.string(lib.bolt_errmsg())
            try:
                assert ffi.buffer(out[0], size[0])[:] == expected
            finally:
                lib.bolt_free(out[0])
            calls += 1
            if calls == 50:
                warmed.wait(DEADLINE)

    runners = [Runner(work) for _ in range(workers)]
    for r in runners:
        r.start()
    warmed.wait(DEADLINE)
    db.close()
    assert all(r.outcome() >= 50 for r in runners)
