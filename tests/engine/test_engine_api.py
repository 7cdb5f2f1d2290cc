"""Engine semantics through the Python API: errors, buckets (nested, inline,
spilled), big values, deep trees, cursors, transactions (rollback, snapshot
isolation, threads, close with open transactions), freelist modes, damaged
files, check / stats / compact. Cross-checks against real bbolt live in the
test_diff_* and test_read_bbolt_files modules."""

from __future__ import annotations

import os
import random
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from boltimages import bolt
from boltimages._bolt import ffi, lib
from tests.helpers import wait_until, waiting_in

ALL_ONES = 0xFFFFFFFFFFFFFFFF
PAGE_HEADER = 16
META_BODY = PAGE_HEADER  # the meta fields start right after the page header


def fill(bucket: bolt.Bucket, n: int, value_size: int = 20, prefix: bytes = b"k") -> dict[bytes, bytes]:
    data = {prefix + b"%08d" % i: bytes([i % 251]) * value_size for i in range(n)}
    for k, v in data.items():
        bucket.put(k, v)
    return data


# ------------------------------------------------------------ open / files

@pytest.mark.parametrize("page_size", [1024, 4096, 8192, 16384])
def test_page_size_recorded_and_reopened(make_db, tmp_path, page_size):
    db = make_db(page_size=page_size)
    with db.begin(write=True) as tx:
        fill(tx.create_bucket(b"b"), 500, value_size=50)
    db.close()
    # the file's own page size wins over the option on reopen
    db = make_db(page_size=4096 if page_size != 4096 else 8192)
    assert db.page_size == page_size
    with db.begin() as tx:
        b = tx.bucket(b"b")
        assert len(list(b.items())) == 500
        assert b.get(b"k00000499") == bytes([499 % 251]) * 50
        assert tx.check() == []


def test_new_file_layout(db, db_path):
    info = db.info()
    assert info["pgid"] == 4 and info["root_pgid"] == 3 and info["freelist_pgid"] == 2
    assert info["txid"] == 1 and info["meta_slot"] == 1
    raw = db_path.read_bytes()
    ps = info["page_size"]
    magic, version, page_size = struct.unpack_from("<III", raw, PAGE_HEADER)
    assert (magic, version, page_size) == (0xED0CDAED, 2, ps)


def test_invalid_file_refused(tmp_path):
    path = tmp_path / "junk.db"
    path.write_bytes(os.urandom(64 * 1024))
    with pytest.raises(bolt.InvalidDatabase):
        bolt.open(path)
    empty = tmp_path / "empty.db"
    empty.write_bytes(b"")
    with pytest.raises(bolt.InvalidDatabase):
        bolt.open(empty, read_only=True)


def _rewrite_meta(path: Path, slot: int, page_size: int, **fields: int) -> None:
    """Change meta fields and store a correct checksum (FNV-1a 64)."""
    raw = bytearray(path.read_bytes())
    off = slot * page_size + META_BODY
    names = ["magic", "version", "page_size", "flags"]
    vals = list(struct.unpack_from("<IIII", raw, off))
    for i, name in enumerate(names):
        vals[i] = fields.get(name, vals[i])
    struct.pack_into("<IIII", raw, off, *vals)
    names64 = ["root", "sequence", "freelist", "pgid", "txid"]
    v64 = list(struct.unpack_from("<5Q", raw, off + 16))
    for i, name in enumerate(names64):
        v64[i] = fields.get(name, v64[i])
    struct.pack_into("<5Q", raw, off + 16, *v64)
    h = 0xCBF29CE484222325
    for byte in raw[off:off + 56]:
        h = ((h ^ byte) * 0x100000001B3) & ALL_ONES
    struct.pack_into("<Q", raw, off + 56, h)
    path.write_bytes(bytes(raw))


def test_version_mismatch(make_db, db_path):
    db = make_db()
    ps = db.page_size
    db.close()
    _rewrite_meta(db_path, 0, ps, version=3)
    _rewrite_meta(db_path, 1, ps, version=3)
    with pytest.raises(bolt.VersionMismatch):
        bolt.open(db_path)


def test_damaged_meta_falls_back_to_the_other(make_db, db_path):
    db = make_db(page_size=16384)
    with db.begin(write=True) as tx:
        tx.create_bucket(b"one").put(b"k", b"v1")
    with db.begin(write=True) as tx:
        tx.bucket(b"one").put(b"k", b"v2")
    slot = db.info()["meta_slot"]
    db.close()
    raw = bytearray(db_path.read_bytes())
    raw[slot * 16384 + META_BODY + 40] ^= 0xFF  # pgid byte: checksum now wrong
    db_path.write_bytes(bytes(raw))
    db = make_db()
    assert db.page_size == 16384  # found by probing for meta 1
    with db.begin() as tx:
        assert tx.bucket(b"one").get(b"k") == b"v1"  # the previous commit


def test_both_metas_damaged(make_db, db_path):
    db = make_db()
    ps = db.page_size
    db.close()
    raw = bytearray(db_path.read_bytes())
    for slot in (0, 1):
        raw[slot * ps + META_BODY + 48] ^= 0x55
    db_path.write_bytes(bytes(raw))
    with pytest.raises(bolt.InvalidDatabase, match="meta"):
        bolt.open(db_path)


def test_truncated_file_detected_before_reading(make_db, db_path):
    db = make_db(page_size=4096)
    with db.begin(write=True) as tx:
        fill(tx.create_bucket(b"b"), 3000, value_size=100)
    older = db.info()["pgid"]
    with db.begin(write=True) as tx:  # both metas now point far into the file
        tx.bucket(b"b").put(b"x", b"y")
    assert db.info()["pgid"] >= older
    db.close()
    with open(db_path, "r+b") as f:
        f.truncate((older - 5) * 4096)  # short of what either meta needs
    # both metas need more pages than the file has: refused, not SIGBUS
    with pytest.raises((bolt.CorruptDatabase, bolt.InvalidDatabase), match="truncated|page"):
        with bolt.open(db_path) as bad:
            with bad.begin() as tx:
                list(tx.bucket(b"b").items())


def test_lock_timeout_names_the_holder(make_db, db_path):
    db = make_db()
    code = ("import sys; sys.path.insert(0, sys.argv[2]); from boltimages import bolt\n"
            "try:\n    bolt.open(sys.argv[1], timeout=0.3)\nexcept bolt.DatabaseLocked as e:\n"
            "    print('LOCKED', e)\n")
    plugin = str(Path(bolt.__file__).resolve().parents[1])
    start = time.monotonic()
    out = subprocess.run([sys.executable, "-c", code, str(db_path), plugin], capture_output=True, text=True,
                         timeout=30)
    assert "LOCKED" in out.stdout and "another process" in out.stdout, out.stdout + out.stderr
    assert time.monotonic() - start < 10
    # readers share the lock with each other but not with a writer
    db.close()
    r1 = bolt.open(db_path, read_only=True)
    r2 = bolt.open(db_path, read_only=True, timeout=0.2)
    r2.close()
    out = subprocess.run([sys.executable, "-c", code, str(db_path), plugin], capture_output=True, text=True,
                         timeout=30)
    assert "LOCKED" in out.stdout
    r1.close()


# ------------------------------------------------------------------ errors

def test_bbolt_errors(db):
    with db.begin(write=True) as tx:
        b = tx.create_bucket(b"b")
        with pytest.raises(bolt.BucketExists):
            tx.create_bucket(b"b")
        assert tx.create_bucket_if_not_exists(b"b").get(b"x") is None
        with pytest.raises(bolt.BucketNameRequired):
            tx.create_bucket(b"")
        with pytest.raises(bolt.KeyRequired):
            b.put(b"", b"v")
        with pytest.raises(bolt.KeyTooLarge):
            b.put(b"k" * 32769, b"v")
        b.put(b"k" * 32768, b"max key is fine")
        b.put(b"value", b"v")
        b.create_bucket(b"sub")
        with pytest.raises(bolt.IncompatibleValue):
            b.put(b"sub", b"x")
        with pytest.raises(bolt.IncompatibleValue):
            b.delete(b"sub")
        with pytest.raises(bolt.IncompatibleValue):
            b.create_bucket(b"value")
        with pytest.raises(bolt.IncompatibleValue):
            b.bucket(b"value") if b.bucket(b"value") is not None else b.delete_bucket(b"value")
        with pytest.raises(bolt.BucketNotFound):
            tx.delete_bucket(b"missing")
        assert tx.bucket(b"missing") is None
        b.delete(b"not-there")  # deleting a missing key is not an error
        assert b.get(b"sub") is None  # a nested bucket has no value
    with db.begin() as tx:
        with pytest.raises(bolt.TxNotWritable):
            tx.bucket(b"b").put(b"k", b"v")
        with pytest.raises(bolt.TxNotWritable):
            tx.create_bucket(b"c")


def test_value_too_large_checked_before_reading():
    # Through the C API directly: the length is refused before any byte is read.
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"vtl-{os.getpid()}.db"
    try:
        with bolt.open(path, no_sync=True) as db:
            with db.begin(write=True) as tx:
                b = tx.create_bucket(b"b")
                small = ffi.new("uint8_t[]", 8)
                status = lib.bolt_bucket_put(b._b, b"k", 1, small, (1 << 31) - 1)
                assert status == lib.BOLT_ERR_VALUE_TOO_LARGE
                tx.rollback()
    finally:
        path.unlink(missing_ok=True)


def test_read_only_database(make_db, db_path):
    db = make_db()
    with db.begin(write=True) as tx:
        tx.create_bucket(b"b").put(b"k", b"v")
    db.close()
    ro = make_db(read_only=True)
    with pytest.raises(bolt.DatabaseReadOnly):
        ro.begin(write=True)
    with ro.begin() as tx:
        assert tx.bucket(b"b").get(b"k") == b"v"
        with pytest.raises((bolt.DatabaseReadOnly, bolt.TxNotWritable)):
            tx.bucket(b"b").put(b"k", b"w")


def test_top_level_holds_only_buckets(db):
    with db.begin(write=True) as tx:
        with pytest.raises(bolt.IncompatibleValue):
            tx.root.put(b"k", b"v")


# -------------------------------------------------------- buckets / values

def _stats(db, *path):
    with db.begin() as tx:
        b = tx.bucket(path[0])
        for name in path[1:]:
            b = b.bucket(name)
        return b.stats()


def test_inline_bucket_spills_and_comes_back(make_db):
    db = make_db(page_size=4096)
    with db.begin(write=True) as tx:
        sub = tx.create_bucket(b"top").create_bucket(b"sub")
        fill(sub, 10, value_size=20)
    st = _stats(db, b"top", b"sub")
    assert st["inline_bucket_n"] == 1 and st["leaf_page_n"] == 0
    with db.begin(write=True) as tx:
        fill(tx.bucket(b"top").bucket(b"sub"), 40, value_size=20)  # 40 * 48 bytes > 4096 / 4
    st = _stats(db, b"top", b"sub")
    assert st["inline_bucket_n"] == 0 and st["leaf_page_n"] == 1 and st["key_n"] == 40
    with db.begin(write=True) as tx:
        sub = tx.bucket(b"top").bucket(b"sub")
        for k, _ in list(sub.items())[3:]:
            sub.delete(k)
    st = _stats(db, b"top", b"sub")
    assert st["inline_bucket_n"] == 1 and st["key_n"] == 3
    with db.begin() as tx:
        assert tx.check() == []
        assert [k for k, _ in tx.bucket(b"top").bucket(b"sub").items()] == [b"k%08d" % i for i in range(3)]


def test_bucket_with_sub_bucket_is_never_inline(db):
    with db.begin(write=True) as tx:
        tx.create_bucket(b"a").create_bucket(b"b").put(b"k", b"v")
    assert _stats(db, b"a")["inline_bucket_n"] == 1  # only b is inline
    with db.begin() as tx:
        assert tx.bucket(b"a").bucket(b"b").get(b"k") == b"v"


def test_nested_buckets_any_depth(db):
    depth = 40
    with db.begin(write=True) as tx:
        b = tx.create_bucket(b"l0")
        for d in range(1, depth):
            b.put(b"key", b"at %d" % d)
            b = b.create_bucket(b"l%d" % d)
        b.set_sequence(77)
    with db.begin() as tx:
        b = tx.bucket(b"l0")
        for d in range(1, depth):
            assert b.get(b"key") == b"at %d" % d
            b = b.bucket(b"l%d" % d)
        assert b.sequence() == 77
        assert tx.check() == []


def test_big_values_and_keys_use_overflow_pages(make_db):
    db = make_db(page_size=4096)
    big = os.urandom(2 << 20)
    long_keys = [bytes([i]) * 10000 for i in range(1, 30)]
    with db.begin(write=True) as tx:
        b = tx.create_bucket(b"b")
        b.put(b"big", big)
        for k in long_keys:
            b.put(k, b"x")
    with db.begin() as tx:
        b = tx.bucket(b"b")
        assert b.get(b"big") == big
        assert all(b.get(k) == b"x" for k in long_keys)
        st = b.stats()
        assert st["leaf_overflow_n"] >= 512
        assert st["branch_page_n"] >= 1
        assert tx.check() == []
    with db.begin(write=True) as tx:
        tx.bucket(b"b").delete(b"big")
    with db.begin() as tx:
        assert tx.check() == []
    assert db.info()["free_count"] + db.info()["pending_count"] >= 512


def test_deep_tree_random_inserts_and_deletes(make_db):
    db = make_db(page_size=1024)
    rnd = random.Random(7)
    model: dict[bytes, bytes] = {}
    for _ in range(6):
        with db.begin(write=True) as tx:
            b = tx.create_bucket_if_not_exists(b"b")
            for _ in range(3000):
                k = rnd.randbytes(rnd.randrange(1, 40))
                if model and rnd.random() < 0.3:
                    k = rnd.choice(list(model))
                    b.delete(k)
                    del model[k]
                else:
                    v = rnd.randbytes(rnd.randrange(0, 60))
                    b.put(k, v)
                    model[k] = v
        with db.begin() as tx:
            b = tx.bucket(b"b")
            assert list(b.items()) == sorted(model.items())
            assert tx.check() == []
    assert _stats(db, b"b")["depth"] >= 3


def test_delete_everything_leaves_an_empty_sound_tree(make_db):
    db = make_db(page_size=1024)
    with db.begin(write=True) as tx:
        data = fill(tx.create_bucket(b"b"), 5000)
    with db.begin(write=True) as tx:
        b = tx.bucket(b"b")
        for k in data:
            b.delete(k)
    with db.begin() as tx:
        assert list(tx.bucket(b"b").items()) == []
        assert tx.bucket(b"b").stats()["key_n"] == 0
        assert tx.check() == []


def test_delete_bucket_frees_every_page_of_nested_buckets(db):
    with db.begin(write=True) as tx:
        x = tx.create_bucket(b"X")
        x.create_bucket(b"A")
        fill(x.create_bucket(b"B"), 40, value_size=100)
        fill(x.create_bucket(b"C").create_bucket(b"D"), 200, value_size=100)
    # bbolt 1.3.6 leaks B's pages here (entry skipped after deleting A)
    with db.begin(write=True) as tx:
        tx.bucket(b"X").put(b"k", b"v")
        tx.delete_bucket(b"X")
    with db.begin() as tx:
        assert tx.buckets() == []
        assert tx.check() == []


def test_deleted_bucket_handle_refuses_work(db):
    with db.begin(write=True) as tx:
        a = tx.create_bucket(b"a")
        inner = a.create_bucket(b"inner")
        tx.delete_bucket(b"a")
        with pytest.raises(bolt.BucketNotFound):
            a.put(b"k", b"v")
        with pytest.raises(bolt.BucketNotFound):
            inner.get(b"k")
        assert tx.bucket(b"a") is None
        again = tx.create_bucket(b"a")
        again.put(b"k", b"v")
    with db.begin() as tx:
        assert list(tx.bucket(b"a").items()) == [(b"k", b"v")]


def test_sequences(db):
    with db.begin(write=True) as tx:
        b = tx.create_bucket(b"b")
        assert b.sequence() == 0
        assert [b.next_sequence() for _ in range(3)] == [1, 2, 3]
        b.set_sequence(ALL_ONES - 1)
        assert b.next_sequence() == ALL_ONES
        with pytest.raises(bolt.SequenceOverflow):
            b.next_sequence()
        b.set_sequence(41)
    with db.begin(write=True) as tx:
        assert tx.bucket(b"b").next_sequence() == 42
        tx.rollback()
    with db.begin() as tx:
        assert tx.bucket(b"b").sequence() == 41
        with pytest.raises(bolt.TxNotWritable):
            tx.bucket(b"b").next_sequence()


def test_batch_calls(db):
    pairs = [(b"k%05d" % i, b"v%d" % i) for i in range(2000)]
    with db.begin(write=True) as tx:
        b = tx.create_bucket(b"b")
        b.put_many(reversed(pairs))
        b.create_bucket(b"nested")
    with db.begin() as tx:
        b = tx.bucket(b"b")
        keys = [k for k, _ in pairs] + [b"missing", b"nested"]
        assert [b.get(k) for k in keys] == [v for _, v in pairs] + [None, None]
        assert list(b.items()) == pairs + [(b"nested", None)]


# ----------------------------------------------------------------- cursors

def test_cursor_ends_and_seek(db):
    with db.begin(write=True) as tx:
        b = tx.create_bucket(b"b")
        for k in (b"b", b"d", b"f"):
            b.put(k, k.upper())
        b.create_bucket(b"e")
    with db.begin() as tx:
        c = tx.bucket(b"b").cursor()
        assert c.first() == (b"b", b"B")
        assert c.prev() is None
        assert c.last() == (b"f", b"F")
        assert c.next() is None
        assert c.prev() == (b"f", b"F")
        assert c.seek(b"c") == (b"d", b"D")
        assert c.next() == (b"e", None)  # nested bucket: value None
        assert c.seek(b"a") == (b"b", b"B")
        assert c.seek(b"g") is None
        assert c.seek(b"d") == (b"d", b"D")
        empty = tx.bucket(b"b").bucket(b"e").cursor()
        assert empty.first() is None and empty.last() is None and empty.seek(b"x") is None


def test_cursor_walks_both_ways_over_many_pages(make_db):
    db = make_db(page_size=1024)
    with db.begin(write=True) as tx:
        data = fill(tx.create_bucket(b"b"), 4000)
    keys = sorted(data)
    with db.begin() as tx:
        c = tx.bucket(b"b").cursor()
        fwd = []
        item = c.first()
        while item:
            fwd.append(item[0])
            item = c.next()
        back = []
        item = c.last()
        while item:
            back.append(item[0])
            item = c.prev()
        assert fwd == keys and back == keys[::-1]
        for k in random.Random(1).sample(keys, 200):
            assert c.seek(k)[0] == k


def test_cursor_delete_while_iterating(make_db):
    db = make_db(page_size=1024)
    with db.begin(write=True) as tx:
        data = fill(tx.create_bucket(b"b"), 3000)
        tx.bucket(b"b").create_bucket(b"k00000100x")
    with db.begin(write=True) as tx:
        c = tx.bucket(b"b").cursor()
        item = c.first()
        seen = 0
        while item:
            seen += 1
            if item[1] is None:
                with pytest.raises(bolt.IncompatibleValue):
                    c.delete()
            elif int(item[0][1:9]) % 3:
                c.delete()
            item = c.next()
        assert seen == 3001  # no entry skipped after a delete
    with db.begin() as tx:
        left = [k for k, _ in tx.bucket(b"b").items()]
        assert left == sorted([k for k in data if int(k[1:9]) % 3 == 0] + [b"k00000100x"])
        assert tx.check() == []


def test_cursor_sees_its_own_transaction(db):
    with db.begin(write=True) as tx:
        b = tx.create_bucket(b"b")
        fill(b, 100)
        c = b.cursor()
        assert c.seek(b"k00000050")[0] == b"k00000050"
        b.put(b"k00000050a", b"new")  # a change under the cursor
        assert c.next() == (b"k00000050a", b"new")
        assert c.next()[0] == b"k00000051"


# ------------------------------------------------------------ transactions

def test_rollback_discards_and_restores_freelist(make_db):
    db = make_db(page_size=1024)
    with db.begin(write=True) as tx:
        fill(tx.create_bucket(b"b"), 3000)
    with db.begin(write=True) as tx:
        b = tx.bucket(b"b")
        for k, _ in list(b.items())[:2000]:
            b.delete(k)
    before = db.info()
    with db.begin(write=True) as tx:
        fill(tx.bucket(b"b"), 3000, prefix=b"n")
        tx.create_bucket(b"c")
        tx.rollback()
    after = db.info()
    # (pending pages of earlier commits may have become free meanwhile)
    assert (after["free_count"] + after["pending_count"], after["pgid"]) == \
           (before["free_count"] + before["pending_count"], before["pgid"])
    assert before["free_count"] + before["pending_count"] > 0
    with db.begin() as tx:
        assert tx.buckets() == [b"b"]
        assert len(list(tx.bucket(b"b").items())) == 1000
    with pytest.raises(RuntimeError):
        with db.begin(write=True) as tx:
            tx.bucket(b"b").put(b"zzz", b"v")
            raise RuntimeError("abort")
    with db.begin() as tx:
        assert tx.bucket(b"b").get(b"zzz") is None
        assert tx.check() == []


def test_reader_snapshot_survives_many_commits(make_db):
    db = make_db(page_size=1024)
    with db.begin(write=True) as tx:
        old = fill(tx.create_bucket(b"b"), 2000, value_size=50)
    reader = db.begin()
    for round_ in range(20):
        with db.begin(write=True) as tx:  # rewrite everything: frees all old pages
            b = tx.bucket(b"b")
            for k in old:
                b.put(k, b"round %d" % round_ * 5)
    b = reader.bucket(b"b")
    assert dict(b.items()) == old
    assert db.info()["pending_count"] > 0  # pages the reader sees are held back
    reader.rollback()
    with db.begin(write=True) as tx:
        tx.bucket(b"b").put(b"x", b"y")
    assert db.info()["pending_count"] < 100
    with db.begin() as tx:
        assert tx.check() == []


@pytest.mark.threaded
def test_concurrent_readers_and_writer_threads(make_db):
    db = make_db(page_size=4096)
    with db.begin(write=True) as tx:
        tx.create_bucket(b"b").put(b"counter", b"0")
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            for i in range(1, 201):
                with db.begin(write=True) as tx:
                    b = tx.bucket(b"b")
                    b.put(b"counter", b"%d" % i)
                    b.put(b"key%d" % i, os.urandom(300))
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)
        finally:
            stop.set()

    def reader() -> None:
        try:
            while not stop.is_set():
                with db.begin() as tx:
                    b = tx.bucket(b"b")
                    n = int(b.get(b"counter"))
                    keys = [k for k in b.keys() if k.startswith(b"key")]
                    assert len(keys) == n, (len(keys), n)  # a consistent snapshot
        except BaseException as e:  # pragma: no cover
            errors.append(e)

    threads = [threading.Thread(target=writer)] + [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    with db.begin() as tx:
        assert tx.bucket(b"b").get(b"counter") == b"200"
        assert tx.check() == []


@pytest.mark.threaded
def test_second_writer_waits_for_the_first(db):
    order: list[str] = []
    tx = db.begin(write=True)
    tx.create_bucket(b"b")

    def other() -> None:
        with db.begin(write=True) as tx2:
            order.append("second")
            assert tx2.bucket(b"b") is not None

    t = threading.Thread(target=other)
    t.start()
    # the second writer must be inside the engine's begin (waiting for the
    # lock) before the first commits, or this would prove nothing
    assert wait_until(lambda: waiting_in(t, "begin", "lib.bolt_begin(")), "second writer never reached begin"
    assert t.is_alive() and order == []
    order.append("first-commit")
    tx.commit()
    t.join(10)
    assert order == ["first-commit", "second"]


def test_same_thread_second_writer_is_busy(db):
    with db.begin(write=True):
        with pytest.raises(bolt.TxBusy):
            db.begin(write=True)


def test_close_ends_open_transactions(make_db):
    db = make_db()
    with db.begin(write=True) as tx:
        tx.create_bucket(b"b").put(b"k", b"v")
    rtx = db.begin()
    b = rtx.bucket(b"b")
    c = b.cursor()
    c.first()
    wtx = db.begin(write=True)
    wtx.bucket(b"b").put(b"k", b"lost")
    db.close()
    for call in (lambda: b.get(b"k"), c.next, lambda: wtx.bucket(b"b"), wtx.commit,
                 lambda: rtx.bucket(b"b")):
        with pytest.raises(bolt.TxClosed):
            call()
    with pytest.raises(bolt.DatabaseClosed):
        db.begin()
    del rtx, wtx, b, c  # freeing in any order after close must be safe
    db2 = make_db()
    with db2.begin() as tx:
        assert tx.bucket(b"b").get(b"k") == b"v"


def test_operations_after_commit_fail(db):
    tx = db.begin(write=True)
    b = tx.create_bucket(b"b")
    tx.commit()
    with pytest.raises(bolt.TxClosed):
        b.put(b"k", b"v")
    with pytest.raises(bolt.TxClosed):
        tx.commit()


def test_corruption_poisons_the_write_tx(make_db, db_path):
    db = make_db(page_size=4096)
    with db.begin(write=True) as tx:
        fill(tx.create_bucket(b"b"), 2000, value_size=50)
    with db.begin() as tx:
        root = tx.bucket(b"b").stats()
    assert root["branch_page_n"] >= 1
    db.close()
    # Damage a leaf of bucket b: flags -> an unknown page type.
    raw = bytearray(db_path.read_bytes())
    victim = None
    for pg in range(4, len(raw) // 4096):
        flags = struct.unpack_from("<H", raw, pg * 4096 + 8)[0]
        if flags == 0x02 and struct.unpack_from("<H", raw, pg * 4096 + 10)[0] > 10:
            victim = pg
    assert victim is not None
    struct.pack_into("<H", raw, victim * 4096 + 8, 0x20)
    db_path.write_bytes(bytes(raw))
    db = make_db()
    with db.begin() as tx:
        problems = tx.check()
    assert any(f"page {victim}" in p and "invalid type" in p for p in problems), problems
    tx = db.begin(write=True)
    b = tx.bucket(b"b")
    with pytest.raises(bolt.CorruptDatabase, match=f"page {victim}"):
        for i in range(2000):
            b.put(b"k%08d" % i, b"new")
    with pytest.raises(bolt.TxFailed):
        b.put(b"k00000000", b"again")
    with pytest.raises(bolt.TxFailed):
        tx.commit()
    tx.rollback()  # the failed commit already rolled back; this is a no-op
    with db.begin(write=True) as tx2:  # the writer slot was released
        tx2.create_bucket(b"after")


# ---------------------------------------------------------------- freelist

def test_no_freelist_sync_mode(make_db, db_path):
    db = make_db(freelist="no-sync", page_size=4096)
    with db.begin(write=True) as tx:
        data = fill(tx.create_bucket(b"b"), 3000, value_size=60)
    with db.begin(write=True) as tx:
        b = tx.bucket(b"b")
        for k in list(data)[:1500]:
            b.delete(k)
    info = db.info()
    assert info["freelist_pgid"] == ALL_ONES and not info["freelist_persisted"]
    db.close()
    db = make_db()  # keep: the file's mode stays
    info = db.info()
    assert info["freelist_pgid"] == ALL_ONES and info["free_count"] > 0
    with db.begin(write=True) as tx:
        fill(tx.bucket(b"b"), 100, prefix=b"z")
    assert db.info()["pgid"] == info["pgid"]  # rebuilt free pages were reused
    with db.begin() as tx:
        assert tx.check() == []
    db.close()
    db = make_db(freelist="persist")  # like bbolt: write a real freelist at once
    info = db.info()
    assert info["freelist_pgid"] != ALL_ONES
    with db.begin() as tx:
        assert tx.check() == []


def test_large_freelist_uses_count_marker(make_db):
    db = make_db(page_size=1024)
    with db.begin(write=True) as tx:
        tx.create_bucket(b"b").put(b"huge", b"x" * (70 << 20))  # one leaf of ~71700 pages
    with db.begin(write=True) as tx:
        tx.delete_bucket(b"b")
    with db.begin(write=True) as tx:
        tx.create_bucket(b"c")
    info = db.info()
    assert info["free_count"] + info["pending_count"] >= 0xFFFF
    db.close()
    db = make_db()
    assert db.info()["free_count"] >= 0xFFFF
    with db.begin() as tx:
        assert tx.check() == []


# ------------------------------------------------- check / stats / compact

def test_check_reports_unreachable_and_double_free(make_db, db_path):
    db = make_db(page_size=4096)
    with db.begin(write=True) as tx:
        fill(tx.create_bucket(b"b"), 500)
    info = db.info()
    db.close()
    raw = bytearray(db_path.read_bytes())
    fl = info["freelist_pgid"]
    count = struct.unpack_from("<H", raw, fl * 4096 + 10)[0]
    # forget the freelist's contents: every free page becomes unreachable unfreed
    struct.pack_into("<H", raw, fl * 4096 + 10, 0)
    db_path.write_bytes(bytes(raw))
    problems = bolt.check_file(db_path)
    if count:
        assert any("unreachable unfreed" in p for p in problems), problems
    # list the root page as free: reachable freed
    struct.pack_into("<HQ", raw, fl * 4096 + 10, 2, 0)
    struct.pack_into("<QQ", raw, fl * 4096 + 16, info["root_pgid"], info["root_pgid"])
    db_path.write_bytes(bytes(raw))
    problems = bolt.check_file(db_path)
    assert any("already freed" in p for p in problems), problems
    assert any(f"page {info['root_pgid']}: reachable freed" in p for p in problems), problems


def test_stats_match_bbolt_semantics(make_db):
    db = make_db(page_size=4096)
    with db.begin(write=True) as tx:
        b = tx.create_bucket(b"b")
        fill(b, 1000, value_size=50)
        b.create_bucket(b"inline").put(b"a", b"b")
    st = _stats(db, b"b")
    assert st["key_n"] == 1001 + 1 and st["bucket_n"] == 2 and st["inline_bucket_n"] == 1
    assert st["leaf_alloc"] == (st["leaf_page_n"] + st["leaf_overflow_n"]) * 4096
    assert st["branch_alloc"] == (st["branch_page_n"] + st["branch_overflow_n"]) * 4096
    assert 0 < st["leaf_inuse"] <= st["leaf_alloc"]
    # bbolt adds the deepest sub-bucket's depth: branch + leaf + inline leaf
    assert st["depth"] == 3 and st["inline_bucket_inuse"] > 0


def test_stats_of_a_bucket_holding_many_inline_buckets(make_db):
    """containerd's layout: each image record is a bucket of its own holding
    small inline buckets (labels, target), so a leaf page holds many inline
    pages. Stats once took that for a page graph visited twice."""
    db = make_db(page_size=4096)
    with db.begin(write=True) as tx:
        images = tx.create_bucket(b"images")
        for i in range(3000):
            record = images.create_bucket(b"docker.io/library/app%d:latest" % i)
            record.put(b"createdat", bytes(15))
            record.create_bucket(b"labels").put(b"group", b"%d" % (i % 10))
            record.create_bucket(b"target").put(b"digest", b"sha256:" + b"ab" * 32)
    st = _stats(db, b"images")
    assert st["bucket_n"] == 1 + 3000 + 6000
    assert st["inline_bucket_n"] == 6000
    assert st["key_n"] == 3000 + 3000 * 3 + 6000


def test_compact_copies_everything_in_chunks(make_db, tmp_path):
    db = make_db(page_size=1024)
    with db.begin(write=True) as tx:
        a = tx.create_bucket(b"a")
        fill(a, 3000, value_size=80)
        a.set_sequence(99)
        n = a.create_bucket(b"n")
        n.put(b"x", b"y")
        n.create_bucket(b"deeper").put(b"z", os.urandom(5000))
        tx.create_bucket(b"empty")
    with db.begin(write=True) as tx:
        a = tx.bucket(b"a")
        for k, _ in list(a.items())[:2500]:
            a.delete(k)
    db.close()
    dst = tmp_path / "compact.db"
    bolt.compact(db.path, dst, tx_max_bytes=20000)

    def snapshot(path):
        out = []
        with bolt.open(path, read_only=True) as d, d.begin() as tx:
            def walk(b, prefix):
                out.append((prefix, b.sequence()))
                for k, v in b.items():
                    out.append((prefix, k, v))
                    if v is None:
                        walk(b.bucket(k), prefix + (k,))
            for name in tx.buckets():
                walk(tx.bucket(name), (name,))
            assert tx.check() == []
        return out

    assert snapshot(dst) == snapshot(db.path)
    assert dst.stat().st_size < Path(db.path).stat().st_size


def test_many_small_transactions_keep_file_bounded(db):
    with db.begin(write=True) as tx:
        tx.create_bucket(b"b")
    for i in range(300):
        with db.begin(write=True) as tx:
            tx.bucket(b"b").put(b"k%d" % (i % 10), os.urandom(200))
    info = db.info()
    assert info["pgid"] < 40, info  # freed pages are reused, not leaked
    with db.begin() as tx:
        assert tx.check() == []


# ----------------------------------------------------------- hostile files

def _bucket_root_pgid(path: Path, page_size: int, root_pgid: int, name: bytes) -> tuple[int, int]:
    """(root pgid of top-level bucket `name`, file offset of that u64)."""
    raw = path.read_bytes()
    base = root_pgid * page_size
    count = struct.unpack_from("<H", raw, base + 10)[0]
    for i in range(count):
        e = base + PAGE_HEADER + 16 * i
        flags, pos, ksize, vsize = struct.unpack_from("<IIII", raw, e)
        key = raw[e + pos:e + pos + ksize]
        if key == name:
            return struct.unpack_from("<Q", raw, e + pos + ksize)[0], e + pos + ksize
    raise AssertionError(f"bucket {name!r} not found")


def _branch_layout(make_db, db_path):
    db = make_db(page_size=4096)
    with db.begin(write=True) as tx:
        fill(tx.create_bucket(b"b"), 3000, value_size=60)
        tx.create_bucket(b"other").put(b"k", b"v")
    info = db.info()
    db.close()
    broot, _ = _bucket_root_pgid(db_path, 4096, info["root_pgid"], b"b")
    raw = bytearray(db_path.read_bytes())
    assert struct.unpack_from("<H", raw, broot * 4096 + 8)[0] == 0x01  # a branch
    return info, broot, raw


def test_cycle_in_page_graph_is_an_error_not_a_hang(make_db, db_path):
    info, broot, raw = _branch_layout(make_db, db_path)
    # first child of the branch points back at the branch itself
    struct.pack_into("<Q", raw, broot * 4096 + PAGE_HEADER + 8, broot)
    db_path.write_bytes(bytes(raw))
    db = make_db()
    with db.begin() as tx:
        with pytest.raises(bolt.CorruptDatabase, match="deeper|branch"):
            list(tx.bucket(b"b").items())
        with pytest.raises(bolt.CorruptDatabase):
            tx.bucket(b"b").stats()
        problems = tx.check()
        assert any(f"page {broot}: multiple references" in p for p in problems), problems
    with db.begin() as tx:
        assert tx.bucket(b"other").get(b"k") == b"v"  # the rest stays readable
    tx = db.begin(write=True)
    with pytest.raises(bolt.CorruptDatabase):
        tx.delete_bucket(b"b")
    with pytest.raises(bolt.TxFailed):
        tx.commit()
    tx.rollback()


def test_bucket_pointing_at_its_parent_ends(make_db, db_path):
    db = make_db(page_size=4096)
    with db.begin(write=True) as tx:
        a = tx.create_bucket(b"a")
        fill(a, 200, value_size=40)  # own pages, not inline
        fill(a.create_bucket(b"child"), 200, value_size=40)
    info = db.info()
    db.close()
    aroot, _ = _bucket_root_pgid(db_path, 4096, info["root_pgid"], b"a")
    raw = bytearray(db_path.read_bytes())
    # rewrite every sub-bucket value inside a's leaves to point at a's root
    patched = 0
    for pg in range(4, len(raw) // 4096):
        base = pg * 4096
        if struct.unpack_from("<H", raw, base + 8)[0] != 0x02:
            continue
        for i in range(struct.unpack_from("<H", raw, base + 10)[0]):
            e = base + PAGE_HEADER + 16 * i
            flags, pos, ksize, vsize = struct.unpack_from("<IIII", raw, e)
            if flags & 1 and raw[e + pos:e + pos + ksize] == b"child":
                struct.pack_into("<Q", raw, e + pos + ksize, aroot)
                patched += 1
    assert patched == 1
    db_path.write_bytes(bytes(raw))
    db = make_db()
    with db.begin() as tx:
        b = tx.bucket(b"a")
        with pytest.raises(bolt.CorruptDatabase, match="nested deeper"):
            for _ in range(1000):
                b = b.bucket(b"child")
        with pytest.raises(bolt.CorruptDatabase):
            tx.bucket(b"a").stats()
        assert any("multiple references" in p for p in tx.check())
    tx = db.begin(write=True)
    with pytest.raises(bolt.CorruptDatabase):
        tx.delete_bucket(b"a")
    tx.rollback()


def test_element_outside_its_page_names_the_page(make_db, db_path):
    info, broot, raw = _branch_layout(make_db, db_path)
    leaf = struct.unpack_from("<Q", raw, broot * 4096 + PAGE_HEADER + 8)[0]
    struct.pack_into("<I", raw, leaf * 4096 + PAGE_HEADER + 16 * 3 + 4, 0x7FFFFFF0)  # pos of element 3
    db_path.write_bytes(bytes(raw))
    db = make_db()
    with db.begin() as tx:
        with pytest.raises(bolt.CorruptDatabase, match=f"page {leaf}"):
            list(tx.bucket(b"b").items())
        assert any(f"page {leaf}" in p for p in tx.check())


def test_page_id_beyond_high_water_mark(make_db, db_path):
    info, broot, raw = _branch_layout(make_db, db_path)
    struct.pack_into("<Q", raw, broot * 4096 + PAGE_HEADER + 8, info["pgid"] + 1000)
    db_path.write_bytes(bytes(raw))
    with bolt.open(db_path, read_only=True) as db, db.begin() as tx:
        with pytest.raises(bolt.CorruptDatabase, match="high water mark"):
            list(tx.bucket(b"b").items())
        assert any("out of bounds" in p for p in tx.check())


def test_remap_keeps_old_readers_alive(make_db):
    db = make_db(page_size=4096)
    with db.begin(write=True) as tx:
        tx.create_bucket(b"b").put(b"small", b"v")
    reader = db.begin()
    b = reader.bucket(b"b")
    c = b.cursor()
    assert c.first() == (b"small", b"v")
    size_before = db.info()["file_size"]
    with db.begin(write=True) as tx:  # grows the file far past the first mapping
        big = tx.bucket(b"b")
        for i in range(40):
            big.put(b"big%02d" % i, bytes([i]) * (1 << 20))
    assert db.info()["file_size"] > size_before + (40 << 20)
    assert b.get(b"small") == b"v" and b.get(b"big00") is None
    assert c.next() is None
    reader.rollback()
    with db.begin() as tx:
        assert tx.bucket(b"b").get(b"big39") == bytes([39]) * (1 << 20)
        assert tx.check() == []
