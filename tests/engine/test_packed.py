"""The batch scan (native/packed.c, bolt_cursor_next_each through
_unpack.scan) and the subtree walk seen through the Python API.

Items come in batches straight from the leaf pages and the cursor resumes
after each, so the tests aim at exactly those edges: huge items right after
a full batch, batches that end mid-leaf, writes between batches, damaged
pages, and use after the transaction ends.
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
def test_items_match_single_calls(db, seed):
    data = _reference(seed)
    with db.begin(write=True) as tx:
        bucket = tx.create_bucket(b"b")
        bucket.put_many(sorted(data.items()))
        bucket.create_bucket(b"\x7fnested").put(b"k", b"v")
    expected = sorted([*data.items(), (b"\x7fnested", None)])
    with db.begin() as tx:
        bucket = tx.bucket(b"b")
        assert list(bucket.items()) == expected, f"seed {seed}"
        assert all(bucket.get(k) == v for k, v in expected[::7]), f"seed {seed}"
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


def test_batch_calls_after_the_transaction_ends(db):
    with db.begin(write=True) as tx:
        tx.create_bucket(b"b").put(b"k", b"v")
    tx = db.begin()
    bucket = tx.bucket(b"b")
    tx.rollback()
    with pytest.raises(bolt.TxClosed):
        list(bucket.items())
    with pytest.raises(bolt.TxClosed):
        bucket.walk_bytes()


@pytest.mark.parametrize("small,megabytes", [(16, 3), (16 + 512, 5), (5, 7)])
def test_oversize_item_right_after_a_full_batch(db, small, megabytes):
    """A value far larger than any batch right after a run of small keys must
    still come out of iteration, in order. (Found by the torn-write test: a
    1.5 MB value after 16 small keys vanished from iteration when items()
    used packed batches; 16 and 528 sat on its first and second batch ends.
    items() now makes its objects straight from the pages.)"""
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


def test_batches_cover_items_with_bounds(db):
    # enough items, of mixed sizes, that the scan runs many full batches
    rng = random.Random(7)
    data = {b"k%06d" % i: rng.randbytes(rng.choice([0, 10, 300, 9000])) for i in range(6000)}
    with db.begin(write=True) as tx:
        bucket = tx.create_bucket(b"b")
        bucket.put_many(sorted(data.items()))
        bucket.create_bucket(b"k003000x")
    expected = sorted([*data.items(), (b"k003000x", None)])
    with db.begin() as tx:
        bucket = tx.bucket(b"b")
        chunks = list(bucket._chunks())
        assert all(keys and len(keys) == len(values) for keys, values in chunks)
        assert [kv for keys, values in chunks for kv in zip(keys, values)] == expected
        assert list(bucket.items(prefix=b"k0030")) == [kv for kv in expected if kv[0].startswith(b"k0030")]
        lo, hi = b"k001234", b"k004321"
        assert [kv for keys, values in bucket._chunks(start=lo, stop=hi) for kv in zip(keys, values)] == \
            [kv for kv in expected if lo <= kv[0] < hi]
        assert list(bucket._chunks(start=b"z")) == []


# ---- scans straight from the leaf pages (bolt_cursor_next_each, _unpack.scan):
# they must hand over exactly what stepping the cursor one item at a time
# does, and leave the cursor where it would be.

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
        assert [kv for keys, values in bucket._chunks() for kv in zip(keys, values)] == expected
        cursor = bucket.cursor()
        cursor.first()
        assert [kv for keys, values, _ in _scan_batches(cursor, 37) for kv in zip(keys, values)] == expected


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
        assert _error_of(lambda: list(bucket._chunks())) == stepped
        assert _error_of(lambda: list(bucket.items())) == stepped
        for max_items in (1, 3, 1024):
            cursor = bucket.cursor()
            cursor.first()
            assert _error_of(lambda: list(_scan_batches_raising(cursor, max_items))) == stepped


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
        assert "page" in walked
        # the store's reader of that bucket fails the same way
        from boltimages.store import image_records
        assert _error_of(lambda: image_records.read_all(images)) == walked
        # and so does the cut made as the engine walks, with no copy
        assert _error_of(lambda: image_records.read_checked(images)) == walked


def test_scan_refuses_bad_arguments(db):
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
