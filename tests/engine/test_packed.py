"""Packed batch calls (native/packed.c) seen through the Python API.

The packed paths copy items into a shared per-thread buffer and resume the
cursor when an item does not fit, so the tests aim at exactly those edges:
items larger than the buffer, batches that end on a full buffer, multi-gets
that need several rounds, deep walks, and use after the transaction ends.
"""

from __future__ import annotations

import random
import threading

import pytest

from boltimages import bolt


@pytest.fixture()
def db(tmp_path):
    with bolt.open(tmp_path / "packed.db") as handle:
        yield handle


def _reference(seed: int) -> dict[bytes, bytes]:
    rng = random.Random(seed)
    data: dict[bytes, bytes] = {}
    for i in range(3000):
        size = rng.choice([0, 1, 40, 4000, 70_000]) if i % 97 else 600_000
        data[rng.randbytes(rng.randint(1, 40))] = rng.randbytes(size)
    return data


@pytest.mark.parametrize("seed", [1, 2])
def test_items_and_get_many_match_single_calls(db, seed):
    data = _reference(seed)
    with db.begin(write=True) as tx:
        bucket = tx.create_bucket(b"b")
        bucket.put_many(sorted(data.items()))
        bucket.create_bucket(b"\x7fnested").put(b"k", b"v")
    expected = sorted([*data.items(), (b"\x7fnested", None)])
    with db.begin() as tx:
        bucket = tx.bucket(b"b")
        assert list(bucket.items()) == expected, f"seed {seed}"
        keys = [k for k, _ in expected] + [b"missing"]
        random.Random(seed).shuffle(keys)
        assert bucket.get_many(keys) == [bucket.get(k) for k in keys], f"seed {seed}"
        # a range that starts inside the data and stops before its end
        lo, hi = expected[100][0], expected[2000][0]
        assert list(bucket.items(start=lo, stop=hi)) == [kv for kv in expected if lo <= kv[0] < hi]


def test_items_resume_inside_a_write_transaction(db):
    with db.begin(write=True) as tx:
        bucket = tx.create_bucket(b"b")
        for i in range(1500):
            bucket.put(b"%05d" % i, b"x" * (i % 300))
        seen = list(bucket.items())
        assert [k for k, _ in seen] == [b"%05d" % i for i in range(1500)]
        assert all(v == b"x" * (int(k) % 300) for k, v in seen)


def test_walk_and_tree_follow_nesting(db):
    with db.begin(write=True) as tx:
        top = tx.create_bucket(b"top")
        top.put(b"a", b"1")
        level = top
        for depth in range(10):
            level = level.create_bucket(b"n%d" % depth)
            level.put(b"v", b"%d" % depth)
    with db.begin() as tx:
        walked = list(tx.bucket(b"top").walk())
        assert walked[0] == (0, b"a", b"1")
        assert walked[1] == (0, b"n0", None)
        # depth first in key order: "n<d+1>" sorts before "v", so the
        # deepest value comes before each level's own value
        assert walked[-1] == (1, b"v", b"0")
        assert max(walked) == (10, b"v", b"9")
        assert [d for d, k, _ in walked if k == b"v"] == list(range(10, 0, -1))
        shallow = tx.bucket(b"top").tree(max_depth=1)
        assert shallow == {b"a": b"1", b"n0": {b"n1": {}, b"v": b"0"}}


@pytest.mark.threaded
def test_threads_do_not_share_results(db):
    with db.begin(write=True) as tx:
        for name in (b"x", b"y"):
            bucket = tx.create_bucket(name)
            bucket.put_many([(b"%06d" % i, name * (i % 50 + 1)) for i in range(5000)])
    errors: list[str] = []

    def reader(name: bytes) -> None:
        with db.begin() as tx:
            bucket = tx.bucket(name)
            for _ in range(5):
                for key, value in bucket.items():
                    if value != name * (int(key) % 50 + 1):
                        errors.append(f"{name!r} {key!r}")
                        return

    threads = [threading.Thread(target=reader, args=(n,)) for n in (b"x", b"y", b"x", b"y")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


def test_packed_calls_after_the_transaction_ends(db):
    with db.begin(write=True) as tx:
        tx.create_bucket(b"b").put(b"k", b"v")
    tx = db.begin()
    bucket = tx.bucket(b"b")
    tx.rollback()
    with pytest.raises(bolt.TxClosed):
        list(bucket.items())
    with pytest.raises(bolt.TxClosed):
        bucket.get_many([b"k"])
    with pytest.raises(bolt.TxClosed):
        bucket.tree()


# The packed buffer is per thread and only grows, so each case's big item is
# larger than the previous case's: every case really exercises the growth path.
@pytest.mark.parametrize("small,megabytes", [(16, 3), (16 + 512, 5), (5, 7)])
def test_oversize_item_right_after_a_full_batch(db, small, megabytes):
    """A value far larger than any batch right after a run of small keys must
    still come out of iteration, in order. (Found by the torn-write test: a
    1.5 MB value after 16 small keys vanished from iteration when items()
    used packed batches; 16 and 528 sat on its first and second batch ends.
    items() now makes its objects straight from the pages, and the packed
    buffer's own growth is tested with the packed calls below.)"""
    big = b"B" * (megabytes << 20)
    with db.begin(write=True) as tx:
        bucket = tx.create_bucket(b"b")
        for i in range(small):
            bucket.put(b"a%04d" % i, b"v")
        bucket.put(b"z-big", big)
        bucket.put(b"z-tail", b"t")
    with db.begin() as tx:
        items = list(tx.bucket(b"b").items())
    assert [k for k, _ in items] == [b"a%04d" % i for i in range(small)] + [b"z-big", b"z-tail"]
    assert dict(items)[b"z-big"] == big


def test_chunks_cover_items_with_bounds(db):
    # enough items, of mixed sizes, that batches end both on the item count and
    # on a full buffer (where the cursor is put back with a seek)
    rng = random.Random(7)
    data = {b"k%06d" % i: rng.randbytes(rng.choice([0, 10, 300, 9000])) for i in range(6000)}
    with db.begin(write=True) as tx:
        bucket = tx.create_bucket(b"b")
        bucket.put_many(sorted(data.items()))
        bucket.create_bucket(b"k003000x")
    expected = sorted([*data.items(), (b"k003000x", None)])
    with db.begin() as tx:
        bucket = tx.bucket(b"b")
        chunks = list(bucket.chunks())
        assert all(keys and len(keys) == len(values) for keys, values in chunks)
        assert [kv for keys, values in chunks for kv in zip(keys, values)] == expected
        assert list(bucket.items(prefix=b"k0030")) == [kv for kv in expected if kv[0].startswith(b"k0030")]
        lo, hi = b"k001234", b"k004321"
        assert [kv for keys, values in bucket.chunks(start=lo, stop=hi) for kv in zip(keys, values)] == \
            [kv for kv in expected if lo <= kv[0] < hi]
        assert list(bucket.chunks(start=b"z")) == []


@pytest.mark.parametrize("call, args", [
    # a length that runs past the data buffer
    ("values", (b"abc", (9).to_bytes(4, "little"), b"\x00", 1)),
    # more items than the length and flag arrays hold
    ("values", (b"", b"", b"", 1)),
    ("values", (b"", b"", b"", -1)),
    # walk records: a header cut short, a body past the end, a depth jump
    ("records", (b"\x00" * 15,)),
    ("records", ((0).to_bytes(4, "little") * 2 + (5).to_bytes(4, "little") + (0).to_bytes(4, "little") + b"ab",)),
    ("tree", ((1).to_bytes(4, "little") + b"\x00" * 12, 64)),
    # scatter: an order that is not a permutation of the items
    ("scatter", ([b"a", b"b"], (1).to_bytes(4, "little") * 2)),
    ("scatter", ([b"a"], (5).to_bytes(4, "little"))),
    ("scatter", ([b"a", b"b"], (0).to_bytes(4, "little"))),
])
def test_unpack_refuses_inconsistent_buffers(call, args):
    # The decoder trusts nothing it is given: lengths are checked against the
    # buffers, so a wrong batch is a ValueError, never a read past the end.
    from boltimages import _unpack
    with pytest.raises(ValueError):
        getattr(_unpack, call)(*args)


def test_get_many_large_batches_answer_in_the_callers_order(db):
    # Large batches are looked up in sorted order and scattered back; the
    # keys share long prefixes (ties in the sort's first pass), repeat, miss,
    # and name nested buckets.
    rng = random.Random(11)
    stored = {b"prefix-shared/" + rng.randbytes(rng.randint(0, 6)): rng.randbytes(rng.choice([0, 5, 700]))
              for _ in range(5000)}
    with db.begin(write=True) as tx:
        bucket = tx.create_bucket(b"b")
        bucket.put_many(sorted(stored.items()))
        bucket.create_bucket(b"prefix-shared/nested")
    asked = list(stored) * 2 + [b"prefix-shared/nested", b"prefix-shared", b"p", b"zzzz" * 9]
    rng.shuffle(asked)
    with db.begin() as tx:
        bucket = tx.bucket(b"b")
        assert bucket.get_many(asked) == [bucket.get(k) for k in asked]


def test_keys_sort_matches_python_order():
    from boltimages._bolt import ffi, lib
    rng = random.Random(3)
    keys = [rng.randbytes(rng.choice([0, 1, 7, 8, 9, 30])) for _ in range(3000)] + [b"same"] * 5
    rng.shuffle(keys)
    n = len(keys)
    blob = b"".join(keys)
    order = ffi.new("uint32_t[]", n)
    sorted_keys = ffi.new("uint8_t[]", len(blob))
    sorted_lens = ffi.new("uint32_t[]", n)
    assert lib.bolt_keys_sort(n, blob, ffi.new("uint32_t[]", [len(k) for k in keys]), order,
                              sorted_keys, sorted_lens) == 0
    expected = sorted(range(n), key=lambda i: (keys[i], i))  # stable: ties keep input order
    assert list(order) == expected
    assert ffi.buffer(sorted_keys)[:] == b"".join(keys[i] for i in expected)
    assert list(sorted_lens) == [len(keys[i]) for i in expected]


# ---- scans straight from the leaf pages (bolt_cursor_next_each, _unpack.scan)
# and the packed copy's leaf runs: both must hand over exactly what stepping
# the cursor one item at a time does, and leave the cursor where it would be.

def _stepped(bucket: bolt.Bucket) -> list[tuple[bytes, bytes | None]]:
    """Every item by single cursor steps: the generic path, for reference."""
    out = []
    cursor = bucket.cursor()
    item = cursor.first()
    while item is not None:
        out.append(item)
        item = cursor.next()
    return out


def _scan_batches(cursor: bolt.Cursor, max_items: int, include_current: bool = True):
    """(keys, values, end) batches of _unpack.scan until the end."""
    from boltimages import _unpack
    from boltimages._bolt import ffi
    mem = ffi.buffer(cursor._mem)
    while True:
        status, keys, values, end = _unpack.scan(mem, include_current, max_items)
        assert status == 0
        yield keys, values, end
        if end:
            return
        include_current = False


def _packed_items(cursor: bolt.Cursor, cap: int, max_items: int):
    """Every item through bolt_cursor_next_packed with a buffer of cap bytes,
    grown only when a single item does not fit (as a binding would)."""
    from boltimages._bolt import ffi, lib
    p = ffi.new("bolt_packed *")
    keep = []

    def buffers(size: int) -> None:
        buf = ffi.new("uint8_t[]", size)
        lens = ffi.new("uint32_t[]", 2 * max_items)
        flags = ffi.new("uint8_t[]", max_items)
        keep[:] = [buf, lens, flags]
        p.buf, p.cap, p.lens, p.flags, p.max = buf, size, lens, flags, max_items

    buffers(cap)
    out: list[tuple[bytes, bytes | None]] = []
    include_current = 1
    while True:
        assert lib.bolt_cursor_next_packed(cursor._c, include_current, p) == 0
        if p.n == 0 and p.need:
            buffers(p.need)
            include_current = 1
            continue
        off = 0
        for i in range(p.n):
            klen, vlen = p.lens[2 * i], p.lens[2 * i + 1]
            key = ffi.buffer(p.buf + off, klen)[:]
            value = None if p.flags[i] else ffi.buffer(p.buf + off + klen, vlen)[:]
            out.append((key, value))
            off += klen + vlen
        if p.end:
            return out
        # a full item count leaves the cursor on the last item; a full buffer on the next one
        include_current = 1 if p.n < max_items else 0


def _mixed_bucket(tx: bolt.Tx, name: bytes = b"b", n: int = 4000) -> dict[bytes, bytes | None]:
    """Keys over many leaves, values from empty to overflow-page sized, and
    nested buckets (inline and not) between them."""
    rng = random.Random(n)
    bucket = tx.create_bucket(name)
    data: dict[bytes, bytes | None] = {}
    for i in range(n):
        data[b"k%06d" % i] = rng.randbytes(rng.choice([0, 1, 16, 100, 100, 100, 700, 5000]))
    bucket.put_many(sorted(data.items()))
    for i in range(0, n, 333):
        child = bucket.create_bucket(b"k%06d/nested" % i)
        child.put(b"x", b"y" * (i % 3000))  # big ones are not inline
        data[b"k%06d/nested" % i] = None
    return data


@pytest.mark.parametrize("max_items", [1, 2, 3, 7, 16, 64, 1024, 100_000])
def test_scan_batches_match_single_steps(db, max_items):
    with db.begin(write=True) as tx:
        data = _mixed_bucket(tx)
    expected = sorted(data.items())
    with db.begin() as tx:
        bucket = tx.bucket(b"b")
        assert _stepped(bucket) == expected
        cursor = bucket.cursor()
        assert cursor.first() == expected[0]
        got = []
        for keys, values, end in _scan_batches(cursor, max_items):
            assert len(keys) == len(values) and (end or len(keys) == max_items)
            assert all(type(k) is bytes for k in keys)
            assert all(v is None or type(v) is bytes for v in values)
            got += zip(keys, values)
        assert got == expected


@pytest.mark.parametrize("cap,max_items", [(1, 5), (150, 3), (4096, 64), (1 << 20, 1024)])
def test_packed_leaf_runs_match_single_steps(db, cap, max_items):
    # Small buffers end batches on an item that does not fit (mid-leaf, where
    # the run must leave the cursor on that item) and on the item count.
    with db.begin(write=True) as tx:
        data = _mixed_bucket(tx, n=2500)
    with db.begin() as tx:
        cursor = tx.bucket(b"b").cursor()
        cursor.first()
        assert _packed_items(cursor, cap, max_items) == sorted(data.items())


@pytest.mark.parametrize("max_items", [1, 5, 40, 1024])
def test_cursor_moves_after_a_scan_batch(db, max_items):
    with db.begin(write=True) as tx:
        data = _mixed_bucket(tx, n=1500)
    expected = sorted(data.items())
    with db.begin() as tx:
        bucket = tx.bucket(b"b")
        for start in (0, 1, 17, 600, len(expected) - max_items - 1):
            if start < 0 or start + max_items >= len(expected):
                continue  # the batch would reach the end
            cursor = bucket.cursor()
            assert cursor.seek(expected[start][0]) == expected[start]
            keys, values, end = next(_scan_batches(cursor, max_items))
            last = start + len(keys) - 1
            assert list(zip(keys, values)) == expected[start:last + 1]
            assert not end
            # the cursor rests on the batch's last item, as after single steps
            assert cursor.next() == expected[last + 1]
            assert cursor.prev() == expected[last]
            assert cursor.prev() == (expected[last - 1] if last > 0 else None)
            # and a batch without the current item continues after it
            cursor.seek(expected[start][0])
            keys, _, _ = next(_scan_batches(cursor, max_items, include_current=False))
            assert keys[0] == expected[start + 1][0]


def test_cursor_moves_after_a_packed_batch_on_a_full_buffer(db):
    from boltimages._bolt import ffi, lib
    with db.begin(write=True) as tx:
        bucket = tx.create_bucket(b"b")
        bucket.put_many([(b"k%04d" % i, b"v" * 100) for i in range(300)])
    with db.begin() as tx:
        cursor = tx.bucket(b"b").cursor()
        cursor.first()
        p = ffi.new("bolt_packed *")
        buf, lens, flags = ffi.new("uint8_t[]", 1000), ffi.new("uint32_t[]", 200), ffi.new("uint8_t[]", 100)
        p.buf, p.cap, p.lens, p.flags, p.max = buf, 1000, lens, flags, 100
        assert lib.bolt_cursor_next_packed(cursor._c, 1, p) == 0
        # 105 bytes per item: nine fit, the cursor rests on the tenth (k0009)
        assert (p.n, p.end) == (9, 0)
        assert cursor.next() == (b"k0010", b"v" * 100)
        assert cursor.prev() == (b"k0009", b"v" * 100)
        assert lib.bolt_cursor_next_packed(cursor._c, 1, p) == 0
        assert ffi.buffer(p.buf, 5)[:] == b"k0009"


def test_scans_inside_a_write_transaction_see_its_changes(db):
    with db.begin(write=True) as tx:
        data = _mixed_bucket(tx, n=3000)
    with db.begin(write=True) as tx:
        bucket = tx.bucket(b"b")
        # change some leaves (they become nodes) and leave others as pages
        for i in range(0, 3000, 250):
            bucket.put(b"k%06d" % i, b"changed")
            data[b"k%06d" % i] = b"changed"
            bucket.delete(b"k%06d" % (i + 7))
            del data[b"k%06d" % (i + 7)]
        bucket.put(b"k001500a", b"new")
        data[b"k001500a"] = b"new"
        expected = sorted(data.items())
        assert _stepped(bucket) == expected
        assert [kv for keys, values in bucket.chunks() for kv in zip(keys, values)] == expected
        cursor = bucket.cursor()
        cursor.first()
        assert [kv for keys, values, _ in _scan_batches(cursor, 37) for kv in zip(keys, values)] == expected
        cursor.first()
        assert _packed_items(cursor, 300, 11) == expected


def test_scan_resumes_after_writes_between_batches(db):
    # Writes between two batches move the tx on: the next batch re-finds the
    # cursor's key, exactly like a single step does.
    with db.begin(write=True) as tx:
        _mixed_bucket(tx, n=2000)

    def run(take_batch) -> list:
        with db.begin(write=True) as tx:
            bucket = tx.bucket(b"b")
            cursor = bucket.cursor()
            seen = [cursor.first()]
            rounds = 0
            while True:
                items, end = take_batch(cursor)
                seen += items
                if end:
                    break
                rounds += 1
                last = seen[-1][0]
                if rounds % 3 == 0:
                    bucket.delete(last)          # the item under the cursor goes away
                elif rounds % 3 == 1:
                    bucket.put(last + b"+", b"inserted after the cursor")
                else:
                    bucket.put(b"k000000", b"rewritten behind the cursor")
            tx.rollback()
            return seen

    def by_scan(cursor):
        keys, values, end = next(_scan_batches(cursor, 50, include_current=False))
        return list(zip(keys, values)), end

    def by_steps(cursor):
        items = []
        for _ in range(50):
            item = cursor.next()
            if item is None:
                return items, True
            items.append(item)
        return items, False

    stepped = run(by_steps)
    assert len(stepped) > 2000
    assert run(by_scan) == stepped


def _corrupt_leaf_element(path, prefix: bytes, element: int = 3) -> int:
    """Point one element of a leaf page holding keys with `prefix` past its
    page; returns the page id."""
    import struct
    raw = bytearray(path.read_bytes())
    page_size = struct.unpack_from("<I", raw, 16 + 8)[0]
    for pgid in range(2, len(raw) // page_size):
        base = pgid * page_size
        flags, count = struct.unpack_from("<HH", raw, base + 8)
        if flags != 0x02 or count < element + 3:
            continue
        elem = base + 16 + 16 * element
        pos, ksize = struct.unpack_from("<II", raw, elem + 4)
        if raw[elem + pos:elem + pos + len(prefix)] != prefix:
            continue
        struct.pack_into("<I", raw, elem + 12, 0x7FFF0000)  # value length runs past the page
        path.write_bytes(bytes(raw))
        return pgid
    raise AssertionError("no leaf page to corrupt")


def _error_of(fn) -> str:
    with pytest.raises(bolt.CorruptDatabase) as info:
        fn()
    return str(info.value)


def test_corrupt_leaf_element_is_an_error_on_every_scan_path(tmp_path):
    path = tmp_path / "corrupt.db"
    with bolt.open(path) as db, db.begin(write=True) as tx:
        tx.create_bucket(b"b").put_many([(b"c-%05d" % i, b"v" * 100) for i in range(3000)])
    pgid = _corrupt_leaf_element(path, b"c-0")
    with bolt.open(path, read_only=True) as db, db.begin() as tx:
        bucket = tx.bucket(b"b")
        stepped = _error_of(lambda: _stepped(bucket))
        assert f"page {pgid}" in stepped
        assert _error_of(lambda: list(bucket.chunks())) == stepped
        assert _error_of(lambda: list(bucket.items())) == stepped
        for max_items in (1, 3, 1024):
            cursor = bucket.cursor()
            cursor.first()
            assert _error_of(lambda: list(_scan_batches_raising(cursor, max_items))) == stepped
        cursor = bucket.cursor()
        cursor.first()
        assert _error_of(lambda: _packed_items_raising(cursor)) == stepped


def _scan_batches_raising(cursor: bolt.Cursor, max_items: int):
    from boltimages import _unpack
    from boltimages._bolt import ffi
    from boltimages.bolt import _error
    mem = ffi.buffer(cursor._mem)
    include_current = True
    while True:
        status, keys, values, end = _unpack.scan(mem, include_current, max_items)
        if status:
            raise _error(status)
        yield keys
        if end:
            return
        include_current = False


def _packed_items_raising(cursor: bolt.Cursor) -> None:
    from boltimages._bolt import ffi, lib
    from boltimages.bolt import _error
    p = ffi.new("bolt_packed *")
    buf, lens, flags = ffi.new("uint8_t[]", 1 << 16), ffi.new("uint32_t[]", 128), ffi.new("uint8_t[]", 64)
    p.buf, p.cap, p.lens, p.flags, p.max = buf, 1 << 16, lens, flags, 64
    include_current = 1
    while True:
        status = lib.bolt_cursor_next_packed(cursor._c, include_current, p)
        if status:
            raise _error(status)
        if p.end:
            return
        include_current = 0


def _damaged_image_table(path) -> None:
    """An ``images`` bucket of 40 records, each on its own pages, with one
    record's leaf element pointing outside its page."""
    with bolt.open(path) as db, db.begin(write=True) as tx:
        images = tx.create_bucket(b"images")
        for i in range(40):
            image = images.create_bucket(b"img-%03d" % i)
            image.create_bucket(b"target").put(b"digest", b"d" * 3000)  # not inline: own pages
            image.put_many([(b"w-%02d" % j, b"x" * 50) for j in range(12)])
    _corrupt_leaf_element(path, b"w-0")


def test_corrupt_element_in_a_walked_bucket_is_an_error(tmp_path):
    path = tmp_path / "corrupt-walk.db"
    _damaged_image_table(path)
    with bolt.open(path, read_only=True) as db, db.begin() as tx:
        images = tx.bucket(b"images")
        walked = _error_of(lambda: images.walk_bytes(2))
        assert _error_of(lambda: images.tree(max_depth=2)) == walked


def _tree_from_walk_buffer(bucket: bolt.Bucket, max_depth: int) -> dict:
    from boltimages import _unpack
    return _unpack.tree(bucket.walk_bytes(max_depth), max_depth)


@pytest.mark.parametrize("max_depth", [0, 1, 2, 5, 64])
def test_tree_matches_the_walk_buffer(db, max_depth):
    rng = random.Random(max_depth)
    media = b"application/vnd.oci.image.manifest.v1+json"
    with db.begin(write=True) as tx:
        images = tx.create_bucket(b"images")
        images.put(b"plain", b"value at the top")
        for i in range(300):
            image = images.create_bucket(b"registry/app-%04d:v1" % i)
            image.put_many([(b"createdat", b"t%d" % i), (b"updatedat", b"t%d" % i)])
            if i % 3:
                image.create_bucket(b"labels").put_many(
                    [(b"label-%d" % j, rng.randbytes(rng.randint(0, 30))) for j in range(i % 5)])
            target = image.create_bucket(b"target")
            target.put_many([(b"digest", b"sha256:" + rng.randbytes(32).hex().encode()),
                             (b"mediatype", media), (b"size", bytes([i % 256, 1]))])
            if i % 50 == 0:
                deep = target
                for level in range(6):
                    deep = deep.create_bucket(b"deep-%d" % level)
                    deep.put(b"v", b"%d" % level)
    with db.begin() as tx:
        images = tx.bucket(b"images")
        tree = images.tree(max_depth=max_depth)
        assert tree == _tree_from_walk_buffer(images, max_depth)
        if max_depth >= 2:
            target = tree[b"registry/app-0007:v1"][b"target"]
            assert target[b"mediatype"] == media and type(target[b"mediatype"]) is bytes
            assert tree[b"registry/app-0007:v1"][b"createdat"] == b"t7"
    with db.begin(write=True) as tx:
        images = tx.bucket(b"images")
        images.bucket(b"registry/app-0001:v1").put(b"createdat", b"changed in this tx")
        images.delete_bucket(b"registry/app-0002:v1")
        tree = images.tree(max_depth=max_depth)
        assert tree == _tree_from_walk_buffer(images, max_depth)
        assert b"registry/app-0002:v1" not in tree
        if max_depth >= 1:
            assert tree[b"registry/app-0001:v1"][b"createdat"] == b"changed in this tx"
        tx.rollback()


def test_scan_and_walk_tree_refuse_bad_arguments(db):
    from boltimages import _unpack
    with db.begin(write=True) as tx:
        tx.create_bucket(b"b").put(b"k", b"v")
    with db.begin() as tx:
        with pytest.raises(ValueError):
            _unpack.scan(bytearray(8), True, 10)        # smaller than a cursor
        with pytest.raises(ValueError):
            _unpack.scan(bytearray(4096), True, -1)
        with pytest.raises(BufferError):
            _unpack.scan(b"\x00" * 4096, True, 10)      # read-only memory
        # memory that is not an initialised cursor is refused by the engine
        status, keys, values, end = _unpack.scan(bytearray(4096), True, 10)
        assert status != 0 and keys == [] and values == []
        if hasattr(_unpack, "walk_tree"):
            with pytest.raises(ValueError):
                _unpack.walk_tree(0, 2)
            with pytest.raises(ValueError):
                _unpack.walk_tree(1, -1)
        assert tx.bucket(b"b").tree(max_depth=0) == {b"k": b"v"}


def test_tree_and_rows_share_repeated_short_keys_and_values(db):
    # Keys that differ only in their last byte (label-0 .. label-3) once all
    # fell into one slot of the short-string cache and were never shared:
    # 20,000 label keys cost 20,000 objects. The content is the real check;
    # the object count guards the sharing.
    media = b"application/vnd.oci.image.manifest.v1+json"
    with db.begin(write=True) as tx:
        images = tx.create_bucket(b"images")
        for i in range(500):
            image = images.create_bucket(b"registry/app-%04d:v1" % i)
            image.put_many([(b"createdat", b"t%06d" % i), (b"updatedat", b"t%06d" % i)])
            image.create_bucket(b"labels").put_many([(b"org.example.label-%d" % j, b"v%d-%d" % (i, j))
                                                     for j in range(4)])
            image.create_bucket(b"target").put(b"mediatype", media)
    with db.begin() as tx:
        images = tx.bucket(b"images")
        tree = images.tree(max_depth=3)
        rows = images.rows(b"labels", b"createdat", b"updatedat", (b"target", b"mediatype"))
    for name, labels, created, updated, mediatype in rows:
        assert labels == tree[name][b"labels"]
        assert labels == {b"org.example.label-%d" % j: b"v%d-%d" % (int(name[13:17]), j) for j in range(4)}
        assert created == updated == tree[name][b"createdat"] and mediatype == media
    label_keys = {id(k) for _, labels, *_ in rows for k in labels}
    assert len(label_keys) <= 8, f"{len(label_keys)} objects for 4 distinct label keys"
    # tree() passes every key through the cache, so the image names (short
    # enough to be cached too) evict a label key now and then.
    tree_keys = {id(k) for image in tree.values() for k in image[b"labels"]}
    assert len(tree_keys) <= 100, f"{len(tree_keys)} objects for 2000 label keys of 4 kinds"
    assert len({id(row[4]) for row in rows}) <= 50, "one media type, an object per record"
    assert sum(row[2] is row[3] for row in rows) >= 450, "equal createdat and updatedat not shared"
