"""containerd.services.namespaces.v1.Namespaces over the namespaces store.

Behaviour follows containerd's namespaces service, including what it
publishes: /namespaces/create, /namespaces/update and /namespaces/delete.
"""

from __future__ import annotations

from typing import Any, Callable

import grpc
from google.protobuf import empty_pb2

from ..api.containerd.events import namespace_pb2 as events_pb
from ..api.containerd.services.namespaces.v1 import namespace_pb2 as api
from ..api.containerd.services.namespaces.v1 import namespace_pb2_grpc
from ..errors import BoltImagesError, go_quote
from ..store import namespaces as store
from .status import RawStatus, grpc_errors, request_namespace

Publish = Callable[[str, str, Any], None]


def _event_namespace(context: grpc.ServicerContext, fallback: str) -> str:
    """containerd stamps these events with the caller's namespace; without one, the subject's."""
    return request_namespace(context) or fallback


def _namespace(name: str, labels: dict[str, str]) -> api.Namespace:
    return api.Namespace(name=name, labels=labels)


class NamespacesServicer(namespace_pb2_grpc.NamespacesServicer):
    def __init__(self, db: Any, publish: Publish) -> None:
        self.db = db
        self.publish = publish

    @grpc_errors
    def Get(self, request: api.GetNamespaceRequest, context: grpc.ServicerContext) -> api.GetNamespaceResponse:
        labels = self.db.view(lambda tx: store.get_labels(tx, request.name))
        return api.GetNamespaceResponse(namespace=_namespace(request.name, labels))

    @grpc_errors
    def List(self, request: api.ListNamespacesRequest,
             context: grpc.ServicerContext) -> api.ListNamespacesResponse:
        # containerd ignores ListNamespacesRequest.filter; so do we
        def read(tx: Any) -> list[api.Namespace]:
            return [_namespace(name, store.get_labels(tx, name)) for name in store.list_names(tx)]
        return api.ListNamespacesResponse(namespaces=self.db.view(read))

    @grpc_errors
    def Create(self, request: api.CreateNamespaceRequest,
               context: grpc.ServicerContext) -> api.CreateNamespaceResponse:
        name, labels = request.namespace.name, dict(request.namespace.labels)
        self.db.batch(lambda tx: store.create(tx, name, labels))
        self.publish(_event_namespace(context, name), "/namespaces/create", events_pb.NamespaceCreate(name=name, labels=labels))
        return api.CreateNamespaceResponse(namespace=request.namespace)

    @grpc_errors
    def Update(self, request: api.UpdateNamespaceRequest,
               context: grpc.ServicerContext) -> api.UpdateNamespaceResponse:
        name, labels = request.namespace.name, dict(request.namespace.labels)
        paths = list(request.update_mask.paths) if request.HasField("update_mask") else []

        def set_label(tx: Any, key: str, value: str) -> None:
            # containerd returns SetLabel's error without errdefs.ToGRPC, so
            # clients see code Unknown (with the kind still in the text)
            try:
                store.set_label(tx, name, key, value)
            except BoltImagesError as exc:
                raise RawStatus(grpc.StatusCode.UNKNOWN, str(exc)) from None

        def write(tx: Any) -> None:
            if paths:
                for path in paths:
                    if not path.startswith("labels."):
                        raise RawStatus(grpc.StatusCode.INVALID_ARGUMENT, f"cannot update {go_quote(path)} field")
                    key = path[len("labels."):]
                    set_label(tx, key, labels.get(key, ""))
            else:
                for key in store.get_labels(tx, name):
                    set_label(tx, key, "")
                for key, value in labels.items():
                    set_label(tx, key, value)

        self.db.batch(write)
        self.publish(_event_namespace(context, name), "/namespaces/update", events_pb.NamespaceUpdate(name=name, labels=labels))
        # containerd answers with an empty namespace (it never fills the response in)
        return api.UpdateNamespaceResponse(namespace=api.Namespace())

    @grpc_errors
    def Delete(self, request: api.DeleteNamespaceRequest, context: grpc.ServicerContext) -> empty_pb2.Empty:
        self.db.batch(lambda tx: store.delete(tx, request.name))
        self.publish(request.name, "/namespaces/delete", events_pb.NamespaceDelete(name=request.name))
        return empty_pb2.Empty()
