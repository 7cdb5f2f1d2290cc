"""containerd.services.containers.v1.Containers, read-only.

``ctr containers ls`` / ``info`` and clients that look containers up work
against records a containerd wrote (store/containers.py). The message is
built as containerd 2.x's containerToProto builds it: Runtime always
present, spec and runtime options only when stored, both times always set
(Go's zero time when missing), extensions and sandbox as stored. Containers
belong to tasks, snapshots and runtimes that only containerd runs, so
Create, Update and Delete answer Unimplemented.
"""

from __future__ import annotations

from typing import Any, Iterator

import grpc
from google.protobuf import any_pb2
from google.protobuf.message import DecodeError

from ..api.containerd.services.containers.v1 import containers_pb2 as api
from ..api.containerd.services.containers.v1 import containers_pb2_grpc
from ..errors import DataCorruption, go_quote
from ..store.containers import ContainerRecord, ContainerStore
from .status import BAD_WIRE_FORMAT, RawStatus, grpc_errors, request_namespace

_READ_ONLY = ("boltimages serves container records read-only; containers are created, "
              "changed and deleted by a real containerd")
#: grpc-go's refusal to send a string that is not UTF-8 (what containerd's
#: client would see for such a stored value)
_NOT_UTF8 = "grpc: error while marshaling: string field contains invalid UTF-8"


def _text(value: bytes) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise RawStatus(grpc.StatusCode.INTERNAL, _NOT_UTF8) from None


def _any(raw: bytes, record: ContainerRecord, into: any_pb2.Any) -> None:
    try:
        into.ParseFromString(raw)
    except DecodeError:
        raise DataCorruption(f"failed to read container {go_quote(record.text(record.id))}: {BAD_WIRE_FORMAT}") from None


def to_proto(record: ContainerRecord) -> api.Container:
    out = api.Container(id=_text(record.id), image=_text(record.image), snapshotter=_text(record.snapshotter),
                        snapshot_key=_text(record.snapshot_key), sandbox=_text(record.sandbox))
    for key, value in record.labels.items():
        out.labels[_text(key)] = _text(value)
    out.runtime.name = _text(record.runtime_name)
    out.runtime.SetInParent()
    if record.runtime_options is not None:
        _any(record.runtime_options, record, out.runtime.options)
    if record.spec is not None:
        _any(record.spec, record, out.spec)
        out.spec.SetInParent()
    for key, value in record.extensions.items():
        _any(value, record, out.extensions[_text(key)])
    record.created.to_proto(out.created_at)
    record.updated.to_proto(out.updated_at)
    return out


class ContainersServicer(containers_pb2_grpc.ContainersServicer):
    def __init__(self, db: Any) -> None:
        self.store = ContainerStore(db)

    @grpc_errors
    def Get(self, request: api.GetContainerRequest, context: grpc.ServicerContext) -> api.GetContainerResponse:
        record = self.store.get(request_namespace(context), request.id)
        return api.GetContainerResponse(container=to_proto(record))

    @grpc_errors
    def List(self, request: api.ListContainersRequest,
             context: grpc.ServicerContext) -> api.ListContainersResponse:
        records = self.store.list(request_namespace(context), list(request.filters))
        return api.ListContainersResponse(containers=[to_proto(r) for r in records])

    @grpc_errors
    def ListStream(self, request: api.ListContainersRequest,
                   context: grpc.ServicerContext) -> Iterator[api.ListContainerMessage]:
        records = self.store.list(request_namespace(context), list(request.filters))
        messages = [api.ListContainerMessage(container=to_proto(r)) for r in records]
        yield from messages

    def _refuse(self, name: str) -> RawStatus:
        return RawStatus(grpc.StatusCode.UNIMPLEMENTED, f"{name}: {_READ_ONLY}")

    @grpc_errors
    def Create(self, request: Any, context: grpc.ServicerContext) -> Any:
        raise self._refuse("Create")

    @grpc_errors
    def Update(self, request: Any, context: grpc.ServicerContext) -> Any:
        raise self._refuse("Update")

    @grpc_errors
    def Delete(self, request: Any, context: grpc.ServicerContext) -> Any:
        raise self._refuse("Delete")
