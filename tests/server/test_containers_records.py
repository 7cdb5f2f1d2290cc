"""Containers read path on hostile records: every damage is a clear status, never a crash.

(The layout itself is checked against a real containerd in tests/compat/test_containers.py.)
"""

from __future__ import annotations

import pathlib

import grpc
import pytest

from boltimages.errors import DataCorruption, FailedPrecondition, InvalidArgument, NotFound
from boltimages.server.containers_service import to_proto
from boltimages.server.status import RawStatus, to_status
from boltimages.store.codec import GO_ZERO_TIME
from boltimages.store.containers import ContainerStore
from boltimages.store.db import MetadataDB

GOOD_TIME = bytes.fromhex("010000000ee2a8163c312f1ffbffff")


def _write(db: MetadataDB, ns: bytes, records: dict[bytes, dict]) -> None:
    def put(bucket, tree: dict) -> None:
        for key, value in tree.items():
            if isinstance(value, dict):
                put(bucket.create_bucket(key), value)
            else:
                bucket.put(key, value)

    def write(tx) -> None:
        containers = tx.create_bucket_if_not_exists(b"v1").create_bucket(ns).create_bucket(b"containers")
        put(containers, records)
    db.update(write)


@pytest.fixture
def store(tmp_path: pathlib.Path):
    db = MetadataDB(tmp_path / "meta.db")
    _write(db, b"default", {
        b"plain": {b"createdat": GOOD_TIME, b"updatedat": GOOD_TIME, b"image": b"img",
                   b"runtime": {b"name": b"r", b"options": b"\n\x01t"}, b"labels": {b"k": b"v"},
                   b"extensions": {b"e": b"", b"nested": {}}},
        b"no-times": {},
        b"spec-as-bucket": {b"spec": {}},
    })
    yield ContainerStore(db), db
    db.close()


def test_missing_keys_read_as_containerd_reads_them(store) -> None:
    containers, _ = store
    bare = to_proto(containers.get("default", "no-times"))
    assert bare.created_at.seconds == GO_ZERO_TIME.seconds and bare.HasField("runtime") and not bare.HasField("spec")
    plain = to_proto(containers.get("default", "plain"))
    assert plain.runtime.options.type_url == "t" and dict(plain.labels) == {"k": "v"}
    assert set(plain.extensions) == {"e", "nested"}
    # a bucket where containerd expects a value reads as empty, as Go's ForEach hands it over
    assert to_proto(containers.get("default", "spec-as-bucket")).HasField("spec")


@pytest.mark.parametrize("namespace,error", [(None, FailedPrecondition), ("", FailedPrecondition),
                                             ("bad ns", InvalidArgument)])
def test_namespace_checked_first(store, namespace, error) -> None:
    with pytest.raises(error):
        store[0].get(namespace, "plain")
    with pytest.raises(error):
        store[0].list(namespace)


def test_missing_and_empty_ids(store) -> None:
    for cid in ("missing", ""):
        with pytest.raises(NotFound, match=f'container "{cid}" in namespace "default": not found'):
            store[0].get("default", cid)


@pytest.mark.parametrize("damage,expected", [
    ({b"createdat": b"\x07"}, 'failed to read container "bad": Time.UnmarshalBinary: unsupported version'),
    ({b"updatedat": b""}, 'failed to read container "bad": Time.UnmarshalBinary: no data'),
])
def test_bad_times_fail_the_call_like_containerd(tmp_path: pathlib.Path, damage, expected) -> None:
    db = MetadataDB(tmp_path / "meta.db")
    try:
        _write(db, b"default", {b"bad": damage, b"good": {}})
        containers = ContainerStore(db)
        for call in (lambda: containers.get("default", "bad"), lambda: containers.list("default")):
            with pytest.raises(DataCorruption) as info:
                call()
            assert to_status(info.value) == (grpc.StatusCode.UNKNOWN, expected)
    finally:
        db.close()


@pytest.mark.parametrize("record,code", [
    ({b"spec": b"\xff\xff\xff"}, grpc.StatusCode.UNKNOWN),
    ({b"runtime": {b"options": b"\x0a\x05ab"}}, grpc.StatusCode.UNKNOWN),
    ({b"extensions": {b"e": b"\x12"}}, grpc.StatusCode.UNKNOWN),
    ({b"image": b"\xff\xfe"}, grpc.StatusCode.INTERNAL),
    ({b"labels": {b"k": b"\xc3"}}, grpc.StatusCode.INTERNAL),
])
def test_undecodable_values_are_clear_statuses(tmp_path: pathlib.Path, record, code) -> None:
    db = MetadataDB(tmp_path / "meta.db")
    try:
        _write(db, b"default", {b"bad": record})
        with pytest.raises((DataCorruption, RawStatus)) as info:
            to_proto(ContainerStore(db).get("default", "bad"))
        got_code, message = to_status(info.value)
        assert got_code == code and "Traceback" not in message and "b'" not in message
    finally:
        db.close()


def test_filters_use_containerd_fields(store) -> None:
    containers, _ = store
    assert [r.id for r in containers.list("default", ["image==img"])] == [b"plain"]
    assert [r.id for r in containers.list("default", ["runtime.name==r"])] == [b"plain"]
    assert [r.id for r in containers.list("default", ["labels.k"])] == [b"plain"]
    assert [r.id for r in containers.list("default", ["id"])] == [b"no-times", b"plain", b"spec-as-bucket"]
    with pytest.raises(InvalidArgument):
        containers.list("default", ["!!"])
