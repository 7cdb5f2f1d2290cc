"""Expired leases, read-only serving, and the event-subscriber cap."""

from __future__ import annotations

import time

import grpc

from boltimages.api.containerd.services.events.v1 import events_pb2, events_pb2_grpc
from boltimages.api.containerd.services.leases.v1 import leases_pb2, leases_pb2_grpc
from boltimages.api.containerd.services.namespaces.v1 import namespace_pb2, namespace_pb2_grpc
from boltimages.store import leases as lease_store
from boltimages.store.db import MetadataDB

from .conftest import Collector, md


def test_expired_leases_are_removed_like_containerds_gc(serve, tmp_path):
    db_path = tmp_path / "meta.db"
    with MetadataDB(db_path) as db:
        for lease_id, expire in (("past", "2001-02-03T04:05:06Z"), ("future", "2999-01-01T00:00:00+02:00"),
                                 ("garbled", "tomorrow"), ("fraction", "2001-02-03T04:05:06.123456789Z")):
            db.update(lambda tx, i=lease_id, e=expire: lease_store.create(
                tx, "gc", i, {lease_store.EXPIRE_LABEL: e}))
        db.update(lambda tx: lease_store.create(tx, "gc", "plain", {}))
    s = serve(db=str(db_path))
    stub = leases_pb2_grpc.LeasesStub(s.channel())
    left = sorted(l.id for l in stub.List(leases_pb2.ListRequest(), metadata=md("gc"), timeout=10).leases)
    # an unparsable expiry is ignored (containerd logs it and keeps the lease)
    assert left == ["future", "garbled", "plain"]
    assert "expired lease removed" in s.log()


def test_read_only_serving_refuses_writes(serve, tmp_path):
    db_path = tmp_path / "meta.db"
    with MetadataDB(db_path) as db:
        db.update(lambda tx: lease_store.create(tx, "ro", "kept", {}))
    before = db_path.read_bytes()
    s = serve("--read-only", db=str(db_path))
    channel = s.channel()
    ns = namespace_pb2_grpc.NamespacesStub(channel)
    assert [n.name for n in ns.List(namespace_pb2.ListNamespacesRequest(), timeout=10).namespaces] == ["ro"]
    try:
        ns.Create(namespace_pb2.CreateNamespaceRequest(namespace=namespace_pb2.Namespace(name="new")), timeout=10)
        raise AssertionError("write accepted on a read-only server")
    except grpc.RpcError as err:
        assert err.code() == grpc.StatusCode.FAILED_PRECONDITION and "read-only" in err.details()
    assert s.stop() == 0
    assert db_path.read_bytes() == before


def test_event_subscribers_are_capped_but_calls_still_flow(serve):
    s = serve("--workers", "10")  # 8 workers stay reserved: two streams allowed
    channel = s.channel()
    events = events_pb2_grpc.EventsStub(channel)
    streams = [Collector(channel) for _ in range(2)]  # both known to be registered
    third = events.Subscribe(events_pb2.SubscribeRequest(), timeout=30)
    try:
        next(third)
        raise AssertionError("third subscriber accepted")
    except grpc.RpcError as err:
        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    ns = namespace_pb2_grpc.NamespacesStub(channel)
    ns.Create(namespace_pb2.CreateNamespaceRequest(namespace=namespace_pb2.Namespace(name="still-ok")), timeout=10)
    assert [[e.topic for e in c.wait_for(1)] for c in streams] == [["/namespaces/create"]] * 2
    for c in streams:
        c.close()
    # cancelled streams free their slots (the server notices within its poll interval)
    deadline = time.monotonic() + 10
    while True:
        try:
            again = Collector(channel)
            break
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    ns.Create(namespace_pb2.CreateNamespaceRequest(namespace=namespace_pb2.Namespace(name="after")), timeout=10)
    assert [e.topic for e in again.wait_for(1)] == ["/namespaces/create"]
    again.close()
