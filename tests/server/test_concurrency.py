"""Many clients at once: every write lands (group commit), reads stay consistent."""

from __future__ import annotations

import threading

import grpc

from boltimages import bolt
from boltimages.api.containerd.services.leases.v1 import leases_pb2, leases_pb2_grpc
from boltimages.api.containerd.services.namespaces.v1 import namespace_pb2, namespace_pb2_grpc
from boltimages.store import leases as lease_store

from .conftest import md


def test_parallel_writers_and_readers(serve):
    s = serve()
    per_thread = 20
    threads_n = 16
    errors: list[str] = []
    channel = s.channel()
    leases = leases_pb2_grpc.LeasesStub(channel)
    namespaces = namespace_pb2_grpc.NamespacesStub(channel)

    def writer(t: int) -> None:
        try:
            for i in range(per_thread):
                leases.Create(leases_pb2.CreateRequest(id=f"t{t}-{i}", labels={"t": str(t)}),
                              metadata=md("busy"), timeout=30)
                if i % 5 == 0:
                    namespaces.List(namespace_pb2.ListNamespacesRequest(), timeout=30)
                    got = leases.List(leases_pb2.ListRequest(filters=[f"labels.t=={t}"]),
                                      metadata=md("busy"), timeout=30).leases
                    # our own earlier writes are always visible to us
                    if len(got) != i + 1:
                        errors.append(f"thread {t} saw {len(got)} of its {i + 1} leases")
        except grpc.RpcError as err:
            errors.append(f"thread {t}: {err.code().name} {err.details()}")

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(threads_n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    listed = leases.List(leases_pb2.ListRequest(), metadata=md("busy"), timeout=30).leases
    assert len(listed) == threads_n * per_thread
    channel.close()
    assert s.stop() == 0
    with bolt.open(s.db) as db:
        assert db.check() == []
        assert len(db.view(lambda tx: lease_store.list_leases(tx, "busy"))) == threads_n * per_thread
