"""containerd.services.leases.v1.Leases over the leases store (namespace from the call)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Sequence

import grpc
from google.protobuf import empty_pb2, timestamp_pb2

from ..api.containerd.services.leases.v1 import leases_pb2 as api
from ..api.containerd.services.leases.v1 import leases_pb2_grpc
from ..store import filters
from ..store import leases as store
from ..store.image_records import NoImageChange
from .status import grpc_errors, namespace

#: what every write here declares (store/db.py commit notes): leases hold
#: image names, never image records, so the kept image snapshots stay true
LEASES_ONLY = NoImageChange("leases")


def _lease(lease: store.Lease) -> api.Lease:
    out = api.Lease(id=lease.id, labels=lease.labels)
    if lease.created_at is not None:
        out.created_at.CopyFrom(timestamp_pb2.Timestamp(seconds=lease.created_at.seconds,
                                                        nanos=lease.created_at.nanos))
    return out


def _adaptor(lease: store.Lease):
    # containerd's lease adaptor: "id" and "labels.<key>" (key parts re-joined with ".")
    def adaptor(path: Sequence[str]) -> tuple[str, bool]:
        if not path:
            return "", False
        if path[0] == "id":
            return lease.id, bool(lease.id)
        if path[0] == "labels":
            key = ".".join(path[1:])
            return (lease.labels[key], True) if lease.labels and key in lease.labels else ("", False)
        return "", False
    return adaptor


def _resource(r: api.Resource) -> store.Resource:
    return store.Resource(r.id, r.type)


class LeasesServicer(leases_pb2_grpc.LeasesServicer):
    def __init__(self, db: Any) -> None:
        self.db = db

    @grpc_errors
    def Create(self, request: api.CreateRequest, context: grpc.ServicerContext) -> api.CreateResponse:
        ns = namespace(context)
        lease_id = request.id or store.random_id()
        labels = dict(request.labels)
        lease = self.db.batch(lambda tx: store.create(tx, ns, lease_id, labels), declares=LEASES_ONLY)
        return api.CreateResponse(lease=_lease(lease))

    @grpc_errors
    def Delete(self, request: api.DeleteRequest, context: grpc.ServicerContext) -> empty_pb2.Empty:
        # "sync" asks containerd to run its garbage collector before returning;
        # we keep no garbage to collect, so the record is gone either way
        ns = namespace(context)
        self.db.batch(lambda tx: store.delete(tx, ns, request.id), declares=LEASES_ONLY)
        return empty_pb2.Empty()

    @grpc_errors
    def List(self, request: api.ListRequest, context: grpc.ServicerContext) -> api.ListResponse:
        ns = namespace(context)
        selected = filters.parse_all(list(request.filters))
        found = self.db.view(lambda tx: store.list_leases(tx, ns, lambda l: selected.match(_adaptor(l))))
        return api.ListResponse(leases=[_lease(l) for l in found])

    @grpc_errors
    def AddResource(self, request: api.AddResourceRequest, context: grpc.ServicerContext) -> empty_pb2.Empty:
        ns = namespace(context)
        self.db.batch(lambda tx: store.add_resource(tx, ns, request.id, _resource(request.resource)),
                      declares=LEASES_ONLY)
        return empty_pb2.Empty()

    @grpc_errors
    def DeleteResource(self, request: api.DeleteResourceRequest,
                       context: grpc.ServicerContext) -> empty_pb2.Empty:
        ns = namespace(context)
        self.db.batch(lambda tx: store.delete_resource(tx, ns, request.id, _resource(request.resource)),
                      declares=LEASES_ONLY)
        return empty_pb2.Empty()

    @grpc_errors
    def ListResources(self, request: api.ListResourcesRequest,
                      context: grpc.ServicerContext) -> api.ListResourcesResponse:
        ns = namespace(context)
        found = self.db.view(lambda tx: store.list_resources(tx, ns, request.id))
        return api.ListResourcesResponse(resources=[api.Resource(id=r.id, type=r.type) for r in found])


def remove_expired(db: Any, now: datetime) -> list[tuple[str, str]]:
    """Delete the leases expired at ``now`` (the server's periodic sweep), as
    (namespace, lease id) pairs. Declared like every lease write: a sweep
    every minute must not send every List back to the file."""
    return db.batch(lambda tx: store.remove_expired(tx, now), declares=LEASES_ONLY)  # type: ignore[no-any-return]
