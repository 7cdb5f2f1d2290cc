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
    """A batch that ends full leaves the cursor on its last item; when the next
    item alone is larger than the buffer, the retry must still return it.
    (Found by the torn-write test: a 1.5 MB value after 16 small keys vanished
    from iteration.) 16 and 528 sit exactly on the first and second batch ends."""
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
    ("pairs", (b"abc", (4).to_bytes(4, "little") * 2, b"\x00", 1)),
    ("values", (b"abc", (9).to_bytes(4, "little"), b"\x00", 1)),
    # more items than the length and flag arrays hold
    ("pairs", (b"abcdef", b"\x01\x00\x00\x00", b"\x00\x00", 2)),
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
