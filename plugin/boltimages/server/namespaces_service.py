"""containerd.services.namespaces.v1.Namespaces over the namespaces store.

Behaviour follows containerd's namespaces service, including what it
publishes: /namespaces/create, /namespaces/update and /namespaces/delete.
Where releases differ we follow 1.7/2.x: the events go out under the
namespace's own name (1.6 used the caller's, and failed a create or update
that carried no namespace header with Unknown). 2.x publishes an update
after committing it, so an Update naming an invalid identifier writes its
labels and then answers Unknown ("failed publishing event: ..."); we check
the name inside the transaction instead and roll it back: same code,
nothing written (the text drops "failed publishing event: ", because none
was attempted).
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import grpc
from google.protobuf import empty_pb2

from ..api.containerd.events import namespace_pb2 as events_pb
from ..api.containerd.services.namespaces.v1 import namespace_pb2 as api
from ..api.containerd.services.namespaces.v1 import namespace_pb2_grpc
from ..errors import BoltImagesError, go_quote
from ..store import namespaces as store
from ..store.validation import validate_namespace
from .status import RawStatus, grpc_errors

Publish = Callable[[str, str, Any], None]

#: how 2.x words the failure of the event it publishes after an update
_PUBLISH_FAILED = "failed publishing event: "
#: bbolt's refusal of an empty bucket name, which containerd passes on as is
_EMPTY_BUCKET_NAME = "bucket name required"


def _unpublishable(name: str) -> Optional[str]:
    """Why an event cannot be published under ``name`` (2.x's text), or None."""
    if not name:
        return "namespace is required: failed precondition"
    try:
        validate_namespace(name)
    except BoltImagesError as exc:
        return str(exc)
    return None


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
        self.publish(name, "/namespaces/create", events_pb.NamespaceCreate(name=name, labels=labels))
        return api.CreateNamespaceResponse(namespace=request.namespace)

    @grpc_errors
    def Update(self, request: api.UpdateNamespaceRequest,
               context: grpc.ServicerContext) -> api.UpdateNamespaceResponse:
        name, labels = request.namespace.name, dict(request.namespace.labels)
        paths = list(request.update_mask.paths) if request.HasField("update_mask") else []

        refused = _unpublishable(name)
        wrote = False

        def set_label(tx: Any, key: str, value: str) -> None:
            # containerd returns SetLabel's error without errdefs.ToGRPC, so
            # clients see code Unknown (with the kind still in the text)
            nonlocal wrote
            if not name:
                raise RawStatus(grpc.StatusCode.UNKNOWN, _EMPTY_BUCKET_NAME)
            wrote = True
            try:
                store.set_label(tx, name, key, value)
            except BoltImagesError as exc:
                raise RawStatus(grpc.StatusCode.UNKNOWN, str(exc)) from None

        def write(tx: Any) -> None:
            nonlocal wrote
            wrote = False  # a batch may run this again
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
            if refused is not None:
                # 2.x would have committed by now and then failed to publish
                raise RawStatus(grpc.StatusCode.UNKNOWN, refused if wrote else _PUBLISH_FAILED + refused)

        self.db.batch(write)
        self.publish(name, "/namespaces/update", events_pb.NamespaceUpdate(name=name, labels=labels))
        # containerd answers with an empty namespace (it never fills the response in)
        return api.UpdateNamespaceResponse()  # 1.7/2.x answer empty (1.6 set an empty namespace)

    @grpc_errors
    def Delete(self, request: api.DeleteNamespaceRequest, context: grpc.ServicerContext) -> empty_pb2.Empty:
        self.db.batch(lambda tx: store.delete(tx, request.name))
        self.publish(request.name, "/namespaces/delete", events_pb.NamespaceDelete(name=request.name))
        return empty_pb2.Empty()
