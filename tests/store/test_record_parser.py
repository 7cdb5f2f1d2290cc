"""The C cutter of image records (native/pyext/records.c, behind
image_records.parse) against the Python loop it replaced, kept here as the
reference.

Seeded random images buckets, odd ones included (plain keys where images
belong, buckets where values belong and the reverse, nested buckets inside
labels, records without target or times, empty maps, long keys), are
written as walk copies the way the engine writes them and cut by both; the
records must be equal field for field. The same holds for walks the engine
itself makes of a file, and a copy that does not parse is a ValueError.
"""

from __future__ import annotations

import gc
import random
import re
import struct
from typing import Any, Optional, Union

import pytest

from boltimages import _records, bolt
from boltimages.store import image_records
from boltimages.store.image_records import RawImage
from tests.helpers import write_tree

SEED = 1127

_HEADER = struct.Struct("=IIII")
Tree = dict[bytes, Union[bytes, "Tree"]]


def reference_parse(data: bytes, top: int, name: Optional[bytes] = None) -> list[RawImage]:
    """The record cutter as it was written in Python (the specification)."""
    out: list[RawImage] = []
    cur = RawImage(name if name is not None else b"")
    if name is not None:
        out.append(cur)
    fields, inner = top + 1, top + 2
    sub = "other"
    pairs: list[tuple[bytes, bytes]] = []
    off = 0
    while off < len(data):
        depth, flags, klen, vlen = _HEADER.unpack_from(data, off)
        off += _HEADER.size
        key = data[off:off + klen]
        off += klen
        value: Optional[bytes] = None
        if not flags & 1:
            value = data[off:off + vlen]
            off += vlen
        if depth == inner:
            if sub in ("labels", "annotations"):
                pairs.append((key, b"" if value is None else value))
            elif sub == "target" and value is not None:
                if key == b"digest":
                    cur.digest = value
                elif key == b"mediatype":
                    cur.media_type = value
                elif key == b"size":
                    cur.size = value
        elif depth == fields:
            sub = "other"
            if value is not None:
                if key == b"createdat":
                    cur.created = value
                elif key == b"updatedat":
                    cur.updated = value
            elif key == b"labels":
                pairs = cur.labels = []
                sub = "labels"
            elif key == b"annotations":
                pairs = cur.annotations = []
                sub = "annotations"
            elif key == b"target":
                cur.has_target = True
                sub = "target"
        elif depth == top:
            sub = "other"
            cur = RawImage(key)
            if value is None:
                out.append(cur)
    return out


def walk_copy(tree: Tree, max_depth: int, depth: int = 0) -> bytes:
    """A tree as bolt_bucket_walk copies it: depth first, keys in order."""
    out = bytearray()
    for key in sorted(tree):
        value = tree[key]
        if isinstance(value, dict):
            out += _HEADER.pack(depth, 1, len(key), 0) + key
            if depth < max_depth:
                out += walk_copy(value, max_depth, depth + 1)
        else:
            out += _HEADER.pack(depth, 0, len(key), len(value)) + key + value
    return bytes(out)


def _fields(raw: RawImage) -> tuple[Any, ...]:
    return tuple(getattr(raw, slot) for slot in RawImage.__slots__ if slot != "wire")


def _random_record(rng: random.Random) -> Tree:
    def blob() -> bytes:
        return bytes(rng.randrange(256) for _ in range(rng.choice([0, 1, 5, 20, 300])))

    def pairs() -> Tree:
        out: Tree = {}
        for _ in range(rng.randrange(0, 5)):
            key = rng.choice([b"a", b"b", b"org.example/x", blob() or b"k", b"x" * 400])
            # a nested bucket among the entries reads as an empty value
            out[key] = {b"deep": b"1"} if rng.random() < 0.1 else blob()
        return out

    record: Tree = {}
    for key in (b"createdat", b"updatedat"):
        roll = rng.random()
        if roll < 0.8:
            record[key] = blob()
        elif roll < 0.9:
            record[key] = {b"odd": b"bucket named like a time"}
    for key in (b"labels", b"annotations"):
        roll = rng.random()
        if roll < 0.7:
            record[key] = pairs()
        elif roll < 0.8:
            record[key] = b"a value named like a sub-bucket"
    roll = rng.random()
    if roll < 0.85:
        target: Tree = {}
        for key in (b"digest", b"mediatype", b"size", b"urls"):
            if rng.random() < 0.9:
                target[key] = {b"nested": b""} if rng.random() < 0.05 else blob()
        record[b"target"] = target
    elif roll < 0.9:
        record[b"target"] = b"not a bucket"
    if rng.random() < 0.1:
        record[b"unknown-future-key"] = {b"x": b"y"}
    return record


def _random_images(rng: random.Random, n: int) -> Tree:
    images: Tree = {}
    for i in range(n):
        name = f"registry.example/app-{i:05d}:v{rng.randrange(9)}".encode()
        images[name] = b"a plain key where an image belongs" if rng.random() < 0.03 else _random_record(rng)
    return images


def test_the_c_cutter_gives_the_reference_records_for_random_buckets() -> None:
    rng = random.Random(SEED)
    for round_ in range(40):
        images = _random_images(rng, rng.randrange(0, 60))
        data = walk_copy(images, 2)
        got = image_records.parse(data, 0)
        want = reference_parse(data, 0)
        assert [_fields(r) for r in got] == [_fields(r) for r in want], f"seed {SEED}, round {round_}"
        assert len(got) == sum(1 for v in images.values() if isinstance(v, dict))


def test_one_records_own_bucket_cuts_like_the_reference() -> None:
    rng = random.Random(SEED + 1)
    for round_ in range(200):
        name = f"n{round_}".encode()
        data = walk_copy(_random_record(rng), 1)
        got = image_records.parse(data, -1, name)
        want = reference_parse(data, -1, name)
        assert len(got) == 1 and [_fields(r) for r in got] == [_fields(r) for r in want], f"round {round_}"


def test_walks_the_engine_makes_cut_like_the_reference(tmp_path: Any) -> None:
    rng = random.Random(SEED + 2)
    images = _random_images(rng, 300)

    with bolt.open(str(tmp_path / "r.db")) as db:
        with db.begin(write=True) as tx:
            write_tree(tx.create_bucket(b"images"), images)
        with db.begin() as tx:
            bucket = tx.bucket(b"images")
            data = bucket.walk_bytes(2)
            assert data == walk_copy(images, 2)  # the copy the tests build is the engine's
            got = image_records.parse(data, 0)
            assert [_fields(r) for r in got] == [_fields(r) for r in reference_parse(data, 0)]
            name = next(k for k, v in sorted(images.items()) if isinstance(v, dict))
            one = image_records.read_one(name, bucket.bucket(name))
            assert _fields(one) == _fields(got[0])


@pytest.mark.parametrize("data", [
    b"\x00" * 15,                                     # short of a header
    _HEADER.pack(0, 1, 10, 0) + b"abc",               # a key past the end
    _HEADER.pack(1, 0, 3, 50) + b"key" + b"v" * 10,   # a value past the end
    _HEADER.pack(0, 1, 0xFFFFFFFF, 0),                # a length near 2**32
])
def test_a_copy_that_does_not_parse_is_a_value_error(data: bytes) -> None:
    with pytest.raises(ValueError, match="walk copy"):
        image_records.parse(data, 0)


def test_every_prefix_of_a_copy_parses_or_fails_cleanly() -> None:
    data = walk_copy(_random_images(random.Random(SEED + 3), 5), 2)
    for cut in range(len(data) + 1):
        try:
            image_records.parse(data[:cut], 0)
        except ValueError:
            pass


def test_wrong_arguments_are_type_and_value_errors() -> None:
    with pytest.raises(TypeError, match="name"):
        _records.parse(b"", -1, None, RawImage)
    with pytest.raises(TypeError, match="name"):
        _records.parse(b"", 0, b"n", RawImage)
    with pytest.raises(TypeError, match="callable"):
        _records.parse(b"", 0, None, 5)
    with pytest.raises(ValueError, match="top"):
        _records.parse(b"", -2, None, RawImage)
    with pytest.raises(TypeError):
        _records.parse("text", 0, None, RawImage)
    # an error from the factory comes through as it is
    with pytest.raises(ZeroDivisionError):
        _records.parse(walk_copy({b"i": {b"createdat": b"x"}}, 2), 0, None, lambda *fields: 1 // 0)


def test_records_are_left_out_of_the_cyclic_collector() -> None:
    """A snapshot's records hold only bytes, tuples and lists: the collector
    need not traverse them, and they are still freed when dropped."""
    import gc
    import weakref

    data = walk_copy({b"img": {b"labels": {b"a": b"1"}, b"annotations": {}, b"target": {b"size": b"\x02"}}}, 2)
    (raw,) = image_records.parse(data, 0)
    assert not gc.is_tracked(raw)
    assert not gc.is_tracked(raw.labels) and not gc.is_tracked(raw.labels[0])
    assert not gc.is_tracked(raw.annotations)
    gone = weakref.ref(raw) if hasattr(raw, "__weakref__") else None
    del raw
    assert gone is None or gone() is None
    # a factory that makes objects of a type the collector does not know is fine
    assert _records.parse(data, 0, None, lambda *fields: len(fields)) == [9]


def test_repeated_short_fields_are_shared_between_records() -> None:
    """Label keys, media types and sizes repeat from image to image; a
    parse makes each distinct one once (fewer objects to make and free)."""
    long_key = b"org.opencontainers.image.source"
    record = {b"labels": {long_key: b"https://example.com/x", b"tier": b"web"},
              b"target": {b"mediatype": b"application/vnd.oci.image.manifest.v1+json", b"size": b"\x96\x01",
                          b"digest": b"sha256:" + b"ab" * 32}}
    data = walk_copy({b"a": record, b"b": record, b"c": record}, 2)
    a, b, c = image_records.parse(data, 0)
    assert a.media_type is b.media_type is c.media_type
    assert a.size is b.size
    assert a.labels is not None and b.labels is not None
    assert a.labels[0][0] is b.labels[0][0] and a.labels[0][0] == long_key
    assert a.labels[1][1] is b.labels[1][1]
    assert _fields(a)[1:] == _fields(b)[1:] == _fields(c)[1:]


def test_the_cutter_finds_every_field_under_the_layouts_names(tmp_path: Any) -> None:
    """records.c names the fields with C literals; store/layout.py names them
    for everything else. A record written with the layout's names must come
    out of the cutter with every field set, so the two cannot drift apart."""
    from boltimages.store import layout

    with bolt.open(str(tmp_path / "l.db")) as db:
        with db.begin(write=True) as tx:
            record = tx.create_bucket(layout.IMAGES_BUCKET).create_bucket(b"img")
            record.put(layout.CREATED_AT_KEY, b"c")
            record.put(layout.UPDATED_AT_KEY, b"u")
            record.create_bucket(layout.LABELS_BUCKET).put(b"lk", b"lv")
            record.create_bucket(layout.ANNOTATIONS_BUCKET).put(b"ak", b"av")
            target = record.create_bucket(layout.TARGET_BUCKET)
            target.put(layout.DIGEST_KEY, b"d")
            target.put(layout.MEDIA_TYPE_KEY, b"m")
            target.put(layout.SIZE_KEY, b"\x02")
        with db.begin() as tx:
            [got] = image_records.read_all(tx.bucket(layout.IMAGES_BUCKET))
    assert _fields(got) == _fields(RawImage(b"img", b"c", b"u", [(b"lk", b"lv")], [(b"ak", b"av")], True,
                                            b"d", b"m", b"\x02"))


# --- which records Python must check, and the cut straight from the walk --------

def _time(seconds: int, nanos: int, version: int = 1, length: int = 15) -> bytes:
    body = bytes([version]) + struct.pack(">qih", seconds, nanos, 0)
    return (body + b"\x00" * length)[:length]


def _checked_records(rng: random.Random, n: int) -> Tree:
    """Records whose times and targets are what check() looks at: mostly
    containerd's own, then other Go forms, bad nanoseconds, junk, none."""
    def stamp() -> Union[bytes, Tree]:
        roll = rng.random()
        if roll < 0.6:
            return _time(rng.randrange(-2**40, 2**40), rng.randrange(10**9))
        return rng.choice([
            _time(1, 10**9), _time(1, -1), _time(1, 2**31 - 1), _time(1, 5, version=2, length=16),
            _time(1, 5, version=0), _time(1, 5, length=14), b"", b"junk", {b"odd": b"bucket"}])
    images: Tree = {}
    for i in range(n):
        record = _random_record(rng)
        for key in (b"createdat", b"updatedat"):
            if rng.random() < 0.9:
                record[key] = stamp()
        if rng.random() < 0.7:
            record[b"target"] = {b"digest": b"sha256:" + b"0" * 64, b"size": b"\x02"}
        images[f"img-{i:04d}".encode()] = record
    return images


def test_the_cutter_names_exactly_the_records_python_must_check() -> None:
    rng = random.Random(SEED + 4)
    seen_plain = seen_suspect = 0
    for round_ in range(30):
        data = walk_copy(_checked_records(rng, rng.randrange(1, 40)), 2)
        suspects: list[RawImage] = []
        records = _records.parse(data, 0, None, RawImage, suspects)
        assert suspects == [raw for raw in records if not raw.is_plain()], f"round {round_}"
        seen_plain += len(records) - len(suspects)
        seen_suspect += len(suspects)
        for raw in records:
            if raw.is_plain():
                raw.check()  # a plain record never fails its check
        # parse_checked raises what the first failing record raises, else gives the records
        first_error = None
        for raw in records:
            try:
                raw.check()
            except Exception as exc:
                first_error = str(exc)
                break
        try:
            got = image_records.parse_checked(data, 0)
        except Exception as exc:
            assert str(exc) == first_error, f"round {round_}"
        else:
            assert first_error is None and [_fields(r) for r in got] == [_fields(r) for r in records]
    assert seen_plain > 100 and seen_suspect > 100


def test_a_records_own_bucket_is_checked_like_a_list() -> None:
    plain = {b"createdat": _time(5, 6), b"target": {b"digest": b"d"}}
    assert _fields(image_records.parse_checked(walk_copy(plain, 1), -1, b"n")[0]) == \
        _fields(RawImage(b"n", _time(5, 6), None, None, None, True, b"d"))
    with pytest.raises(Exception, match='image "n": unable to read target bucket'):
        image_records.parse_checked(walk_copy({b"createdat": _time(5, 6)}, 1), -1, b"n")


def _cut(bucket: bolt.Bucket, make: Any = RawImage) -> tuple[list[Any], list[Any], int]:
    return bucket.walk_native(lambda walk_each, handle: _records.cut_bucket(walk_each, handle, make))


def test_the_cut_from_the_engines_walk_is_the_cut_of_its_copy(tmp_path: Any) -> None:
    rng = random.Random(SEED + 5)
    with bolt.open(str(tmp_path / "w.db")) as db:
        for round_ in range(6):
            images = {**_random_images(rng, rng.randrange(0, 200)), **_checked_records(rng, 50)}
            with db.begin(write=True) as tx:
                if tx.bucket(b"images") is not None:
                    tx.delete_bucket(b"images")
                write_tree(tx.create_bucket(b"images"), images)
                # a bucket this transaction changed is walked through its nodes, not its pages
                bucket = tx.bucket(b"images")
                records, suspects, walked = _cut(bucket)
                data = bucket.walk_bytes(2)
                assert [_fields(r) for r in records] == [_fields(r) for r in image_records.parse(data, 0)]
            with db.begin() as tx:
                bucket = tx.bucket(b"images")
                data = bucket.walk_bytes(2)
                records, suspects, walked = _cut(bucket)
                assert walked == len(data), f"round {round_}"
                assert [_fields(r) for r in records] == [_fields(r) for r in reference_parse(data, 0)]
                assert suspects == [raw for raw in records if not raw.is_plain()]
                assert all(not gc.is_tracked(raw) for raw in records)
                try:
                    got, size = image_records.read_checked(bucket)
                except Exception as exc:
                    with pytest.raises(type(exc), match=re.escape(str(exc))):
                        image_records.parse_checked(data, 0)
                else:
                    assert size == len(data)
                    assert [_fields(r) for r in got] == [_fields(r) for r in image_records.parse_checked(data, 0)]


def test_the_cut_from_the_walk_runs_no_python_while_the_engine_walks(tmp_path: Any) -> None:
    """The factory is called after the walk, once per record, in key order:
    Python code run inside the walk could call the engine on the locked
    transaction. An error from it comes through as it is."""
    with bolt.open(str(tmp_path / "f.db")) as db:
        with db.begin(write=True) as tx:
            write_tree(tx.create_bucket(b"images"), {b"a": {b"target": {}}, b"b": {}, b"c": b"plain"})
        with db.begin() as tx:
            bucket = tx.bucket(b"images")
            calls: list[bytes] = []

            def make(*fields: Any) -> bytes:
                bucket.walk_bytes(2)  # the engine is free again
                calls.append(fields[0])
                return fields[0]

            records, suspects, walked = _cut(bucket, make)
            assert records == calls == [b"a", b"b"] and suspects == [b"b"]
            with pytest.raises(ZeroDivisionError):
                _cut(bucket, lambda *fields: 1 // 0)


def test_cut_bucket_refuses_bad_arguments(tmp_path: Any) -> None:
    with pytest.raises(TypeError):
        _records.cut_bucket("1", 1, RawImage)
    with pytest.raises(ValueError, match="null"):
        _records.cut_bucket(0, 0, RawImage)
    with bolt.open(str(tmp_path / "a.db")) as db:
        with db.begin(write=True) as tx:
            tx.create_bucket(b"images")
        with db.begin() as tx:
            with pytest.raises(TypeError, match="callable"):
                tx.bucket(b"images").walk_native(lambda walk_each, handle: _records.cut_bucket(walk_each, handle, 5))
            assert _cut(tx.bucket(b"images")) == ([], [], 0)


def test_records_made_from_the_slots_are_the_ones_the_class_makes() -> None:
    """The cutter fills RawImage's slots itself (records.c bind_record): every
    slot is set, as __init__ sets it, wire None."""
    data = walk_copy(_checked_records(random.Random(SEED + 6), 30), 2)
    made = image_records.parse(data, 0)
    called = _records.parse(data, 0, None, lambda *fields: RawImage(*fields))
    assert [_fields(r) for r in made] == [_fields(r) for r in called]
    assert all(type(r) is RawImage and r.wire is None for r in made)


def test_bind_record_wants_exactly_the_records_slots() -> None:
    with pytest.raises(TypeError, match="class"):
        _records.bind_record(5)

    class Missing:
        __slots__ = ("name",)

    with pytest.raises(TypeError, match="no slot"):
        _records.bind_record(Missing)

    class More:
        __slots__ = RawImage.__slots__ + ("extra",)

    with pytest.raises(TypeError, match="does not fill"):
        _records.bind_record(More)

    class WithDict:
        __slots__ = RawImage.__slots__ + ("__dict__",)

    with pytest.raises(TypeError, match="does not fill"):
        _records.bind_record(WithDict)
    # RawImage stays bound
    assert type(image_records.parse(walk_copy({b"i": {b"target": {}}}, 2), 0)[0]) is RawImage
