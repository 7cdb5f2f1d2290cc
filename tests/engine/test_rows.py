"""Bucket.rows: one tuple per record bucket with the fields asked for.

The rows are built in C during the engine's walk, which skips the nested
buckets no field needs (BOLT_WALK_SKIP), so the tests compare every row
with a plain Python model of what was written: fields that end on values,
on buckets (a dict of the subtree), on nothing, paths running through a
value, repeated fields, records beside plain values, changes made in the
same write transaction, files written by real bbolt, and damaged files.
"""

from __future__ import annotations

import gc
import itertools
import random
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from boltimages import bolt
from tests.engine.test_packed import _damaged_image_table, _error_of

MEDIA = b"application/vnd.oci.image.manifest.v1+json"
IMAGE_FIELDS = (b"createdat", b"updatedat", b"labels",
                (b"target", b"digest"), (b"target", b"mediatype"), (b"target", b"size"))

Model = dict  # bytes -> bytes (a value) or Model (a nested bucket)


def _image_records(rng: random.Random, n: int) -> Model:
    """containerd-shaped image records, with a few odd ones mixed in."""
    records: Model = {}
    for i in range(n):
        stamp = rng.randbytes(15)
        record: Model = {b"createdat": stamp, b"updatedat": stamp if i % 4 else rng.randbytes(15)}
        if i % 5:
            record[b"labels"] = {b"org.example.label-%d" % j: rng.randbytes(rng.randint(0, 40)).hex().encode()
                                 for j in range(i % 4)}
        record[b"target"] = {b"digest": b"sha256:" + rng.randbytes(32).hex().encode(),
                             b"mediatype": MEDIA, b"size": bytes([i % 256, 1])}
        if i % 37 == 0:
            deep: Model = {b"v": b"leaf"}
            for level in range(5):
                deep = {b"deep-%d" % level: deep, b"at": b"%d" % level}
            record[b"target"][b"annotations"] = deep
        if i % 53 == 0:
            record[b"big"] = rng.randbytes(9000)  # an overflow page of its own
        records[b"registry.example/app-%05d:v%d" % (i, i % 7)] = record
    records[b"a plain value"] = b"not a record"
    records[b"zz plain value"] = b""
    return records


def _write(bucket: bolt.Bucket, model: Model) -> None:
    for key, value in model.items():
        if isinstance(value, dict):
            _write(bucket.create_bucket(key), value)
        else:
            bucket.put(key, value)


def _stored_images(db: bolt.DB, seed: int, n: int) -> Model:
    """n seeded image records, written into a new ``images`` bucket; their model."""
    model = _image_records(random.Random(seed), n)
    with db.begin(write=True) as tx:
        _write(tx.create_bucket(b"images"), model)
    return model


def _resolve(record: Model, path: tuple[bytes, ...]) -> Any:
    node: Any = record
    for key in path:
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return node


def _expected(model: Model, fields: tuple) -> list[tuple]:
    paths = [(bytes(f),) if isinstance(f, (bytes, bytearray, memoryview)) else tuple(map(bytes, f))
             for f in fields]
    return [(name, *(_resolve(record, p) for p in paths))
            for name, record in sorted(model.items()) if isinstance(record, dict)]


FIELD_SETS = [
    IMAGE_FIELDS,
    (),
    (b"createdat",),
    (b"target",),                                      # a bucket: its whole subtree
    ((b"target", b"annotations", b"deep-4", b"deep-3"), (b"target", b"annotations", b"at")),
    (b"missing", (b"labels", b"nope"), (b"createdat", b"through a value")),
    (b"labels", b"labels", (b"target", b"digest"), b"target"),   # repeated and overlapping
    (b"big", [b"target", b"size"], (bytearray(b"target"), memoryview(b"mediatype"))),
]


@pytest.mark.parametrize("fields", FIELD_SETS, ids=[str(i) for i in range(len(FIELD_SETS))])
def test_rows_match_what_was_written(db, fields):
    model = _stored_images(db, len(fields), 700)
    expected = _expected(model, fields)
    with db.begin() as tx:
        images = tx.bucket(b"images")
        rows = images.rows(*fields)
        assert rows == expected
        assert all(type(row) is tuple and len(row) == len(fields) + 1 for row in rows)
        # the pure-Python form (Python before 3.10) agrees
        paths = tuple(bolt._rows_path(i, f) for i, f in enumerate(fields))
        assert bolt._rows_from_tree(images.tree(), paths) == expected
    gc.collect()
    assert rows == expected  # nothing in the result was borrowed from the transaction


def test_image_rows_give_bytes_and_dicts(db):
    model = _stored_images(db, 7, 60)
    with db.begin() as tx:
        rows = {row[0]: row[1:] for row in tx.bucket(b"images").rows(*IMAGE_FIELDS)}
    name = b"registry.example/app-00006:v6"
    created, updated, labels, digest, media, size = rows[name]
    record = model[name]
    assert (created, updated) == (record[b"createdat"], record[b"updatedat"]) and created == updated
    assert labels == record[b"labels"] and type(labels) is dict and len(labels) == 2
    assert (digest, media, size) == (record[b"target"][b"digest"], MEDIA, bytes([6, 1]))
    assert all(type(v) is bytes for v in (created, updated, digest, media, size, *labels, *labels.values()))
    assert rows[b"registry.example/app-00005:v5"][2] is None  # no labels bucket
    assert b"a plain value" not in rows


def test_rows_see_changes_of_the_same_write_transaction(db):
    model = _stored_images(db, 3, 200)
    with db.begin(write=True) as tx:
        images = tx.bucket(b"images")
        first = b"registry.example/app-00001:v1"
        images.bucket(first).put(b"createdat", b"changed in this tx")
        images.bucket(first).bucket(b"target").put(b"digest", b"sha256:new")
        images.delete_bucket(b"registry.example/app-00002:v2")
        _write(images.create_bucket(b"registry.example/app-99999:new"),
               {b"createdat": b"c", b"target": {b"digest": b"d"}, b"labels": {b"k": b"v"}})
        rows = images.rows(*IMAGE_FIELDS)
        model[first][b"createdat"] = b"changed in this tx"
        model[first][b"target"][b"digest"] = b"sha256:new"
        del model[b"registry.example/app-00002:v2"]
        model[b"registry.example/app-99999:new"] = {b"createdat": b"c", b"target": {b"digest": b"d"},
                                                    b"labels": {b"k": b"v"}}
        assert rows == _expected(model, IMAGE_FIELDS)
        tx.rollback()


def test_rows_of_an_empty_bucket_and_of_the_root(db):
    with db.begin(write=True) as tx:
        tx.create_bucket(b"empty")
        tx.create_bucket(b"other").put(b"k", b"v")
    with db.begin() as tx:
        assert tx.bucket(b"empty").rows(b"x") == []
        assert tx.root.rows((b"k",)) == [(b"empty", None), (b"other", b"v")]


@pytest.mark.parametrize("batch", [1, 2, 7, 100, 512, 5000])
def test_iter_rows_in_batches_match_rows(db, batch):
    model = _image_records(random.Random(batch), 450)
    model.update({b"registry.example/app-00100:v2 plain": b"x", b"registry.example/app-00200:v4 plain": b""})
    with db.begin(write=True) as tx:
        _write(tx.create_bucket(b"images"), model)
    with db.begin() as tx:
        images = tx.bucket(b"images")
        for fields in (IMAGE_FIELDS, (), (b"target",)):
            expected = _expected(model, fields)
            assert list(images.iter_rows(*fields, batch=batch)) == expected == images.rows(*fields)


def test_iter_rows_resume_after_the_last_name_returned(db):
    model = _stored_images(db, 5, 100)
    with db.begin(write=True) as tx:
        images = tx.bucket(b"images")
        rows = images.iter_rows(b"createdat", batch=10)
        seen = [next(rows) for _ in range(10)]
        # changes between batches: a later record goes, another comes, an earlier one changes
        images.delete_bucket(b"registry.example/app-00050:v1")
        images.create_bucket(b"registry.example/app-00077:zz").put(b"createdat", b"new")
        images.bucket(seen[0][0]).put(b"createdat", b"too late to be seen")
        seen += list(rows)
        del model[b"registry.example/app-00050:v1"]
        model[b"registry.example/app-00077:zz"] = {b"createdat": b"new"}
        first = _expected(model, (b"createdat",))
        assert seen == first
        tx.rollback()
    with db.begin() as tx:
        rows = tx.bucket(b"images").iter_rows(b"createdat", batch=10)
        next(rows)
    with pytest.raises(bolt.TxClosed):
        list(rows)  # the next batch needs the transaction


def test_rows_refuse_bad_fields(db):
    with db.begin(write=True) as tx:
        tx.create_bucket(b"b").create_bucket(b"r").put(b"k", b"v")
    with db.begin() as tx:
        b = tx.bucket(b"b")
        with pytest.raises(TypeError, match="field 1"):
            b.rows(b"k", "k")
        with pytest.raises(TypeError, match="field 0"):
            b.rows((b"k", 3))
        with pytest.raises(ValueError, match="field 0"):
            b.rows(())
        with pytest.raises(ValueError, match="field 0"):
            b.rows(tuple([b"k"] * 63))
        with pytest.raises(ValueError, match="at most 64"):
            b.rows(*([b"k"] * 65))
        assert b.rows(*([b"k"] * 64)) == [(b"r", *([b"v"] * 64))]
        assert b.rows(tuple([b"k"] * 62)) == [(b"r", None)]
        from boltimages import _unpack
        if hasattr(_unpack, "walk_rows"):
            with pytest.raises(ValueError):
                _unpack.walk_rows(0, (), None, 0)
            with pytest.raises(TypeError):
                _unpack.walk_rows(1, [(b"k",)], None, 0)
            with pytest.raises(TypeError):
                _unpack.walk_rows(1, (), "start", 0)
            with pytest.raises(ValueError):
                _unpack.walk_rows(1, (), None, -1)
        with pytest.raises(ValueError, match="batch"):
            next(b.iter_rows(b"k", batch=0))
        with pytest.raises(TypeError, match="field 0"):
            next(b.iter_rows("k"))


def test_rows_after_the_transaction_ends(db):
    with db.begin(write=True) as tx:
        tx.create_bucket(b"b").create_bucket(b"r").put(b"k", b"v")
    with db.begin() as tx:
        b = tx.bucket(b"b")
    with pytest.raises(bolt.TxClosed):
        b.rows(b"k")


def test_corrupt_record_is_an_error_not_a_crash(tmp_path):
    path = tmp_path / "corrupt-rows.db"
    _damaged_image_table(path)
    with bolt.open(path, read_only=True) as db, db.begin() as tx:
        images = tx.bucket(b"images")
        walked = _error_of(lambda: images.walk_bytes(2))
        assert _error_of(lambda: images.rows(b"w-05")) == walked
        # the walk reads small buckets straight from their page; the damage
        # reads the same as through a cursor
        stepped = _error_of(lambda: [list(images.bucket(name).items()) for name, _ in images.items()])
        assert walked == stepped
        assert _error_of(lambda: list(images.iter_rows(b"w-05", batch=3))) == walked
        assert _error_of(lambda: images.rows((b"target", b"digest"), b"w-00")) == walked


@pytest.mark.compat
def test_rows_read_an_image_table_written_by_bbolt(oracle, tmp_path):
    from tests.oracle import dump_file, first_dump_difference

    model = _image_records(random.Random(11), 300)
    ops: list[dict] = []

    def emit(path: list[bytes], node: Model) -> None:
        for key, value in node.items():
            if isinstance(value, dict):
                ops.append({"op": "create_bucket", "path": [p.hex() for p in path + [key]]})
                emit(path + [key], value)
            else:
                ops.append({"op": "put", "path": [p.hex() for p in path], "key": key.hex(),
                            "value": value.hex()})

    ops.append({"op": "create_bucket", "path": [b"v1".hex()]})
    ops.append({"op": "create_bucket", "path": [b"v1".hex(), b"images".hex()]})
    emit([b"v1", b"images"], model)
    ops.append({"op": "commit"})
    path = tmp_path / "bbolt-images.db"
    oracle.apply(path, ops)
    assert first_dump_difference(dump_file(path), oracle.dump(path)) is None
    with bolt.open(path, read_only=True) as db, db.begin() as tx:
        images = tx.bucket(b"v1").bucket(b"images")
        for fields in FIELD_SETS:
            assert images.rows(*fields) == _expected(model, fields), fields


_keys = st.binary(min_size=1, max_size=6)
_values = st.binary(max_size=80)
_trees = st.recursive(st.dictionaries(_keys, _values, max_size=4),
                      lambda inner: st.dictionaries(_keys, st.one_of(_values, inner), max_size=4),
                      max_leaves=30)
_paths = st.one_of(_keys, st.lists(_keys, min_size=1, max_size=4).map(tuple))


_example = itertools.count()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(table=st.dictionaries(_keys, st.one_of(_values, _trees), max_size=12),
       fields=st.lists(_paths, max_size=6))
def test_rows_match_a_model_for_any_table(tmp_path, table, fields):
    with bolt.open(tmp_path / f"hyp-{next(_example)}.db", no_sync=True) as db:
        with db.begin(write=True) as tx:
            _write(tx.create_bucket(b"t"), table)
            assert tx.bucket(b"t").rows(*fields) == _expected(table, fields)
        with db.begin() as tx:
            assert tx.bucket(b"t").rows(*fields) == _expected(table, fields)
