"""gRPC servicer for containerd.services.images.v1.Images.

Request handling follows containerd's images service: the checks it makes
before touching the store (``Image.Name required``), the namespace from
the ``containerd-namespace`` request header, status codes from the error
kind, and the events it publishes after a successful write.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Optional

import grpc
from google.protobuf import empty_pb2

from .. import bolt
from ..api.containerd.events import image_pb2 as events_pb2
from ..api.containerd.services.images.v1 import images_pb2, images_pb2_grpc
from ..api.containerd.types import descriptor_pb2
from ..errors import BoltImagesError
from ..store import codec
from ..store.db import MetadataDB
from ..store.images import Descriptor, Image, ImageStore

log = logging.getLogger(__name__)

NAMESPACE_HEADER = "containerd-namespace"
LEASE_HEADER = "containerd-lease"

# Go's zero time.Time, which containerd returns for a record lacking a time
_ZERO_TIME = codec.Timestamp(-codec.UNIX_TO_GO_INTERNAL, 0)

Publisher = Callable[[str, str, Any], None]


def metadata_value(context: grpc.ServicerContext, key: str) -> Optional[str]:
    """First value of a request header, as containerd reads it (None if absent)."""
    for k, v in context.invocation_metadata() or ():
        if k == key:
            return v if isinstance(v, str) else v.decode("utf-8", "replace")
    return None


def abort_with(context: grpc.ServicerContext, exc: BaseException) -> None:
    """Turn an exception into containerd's status; never leaks a traceback."""
    if isinstance(exc, BoltImagesError):
        context.abort(getattr(grpc.StatusCode, exc.grpc_code), str(exc))
    if isinstance(exc, bolt.BoltError):
        context.abort(grpc.StatusCode.UNKNOWN, f"metadata store: {exc}")
    log.exception("unexpected error in images service")
    context.abort(grpc.StatusCode.UNKNOWN, f"{type(exc).__name__}: {exc}")


# --- proto <-> store ---------------------------------------------------------

def image_from_proto(message: images_pb2.Image) -> Image:
    target = message.target
    return Image(
        name=message.name,
        labels=dict(message.labels) if message.labels else None,
        target=Descriptor(media_type=target.media_type, digest=target.digest, size=target.size,
                          annotations=dict(target.annotations) if target.annotations else None),
    )


def image_to_proto(image: Image) -> images_pb2.Image:
    out = images_pb2.Image(name=image.name)
    out.labels.update(image.labels or {})
    out.target.CopyFrom(descriptor_to_proto(image.target))
    (image.created_at or _ZERO_TIME).to_proto(out.created_at)
    (image.updated_at or _ZERO_TIME).to_proto(out.updated_at)
    return out


def descriptor_to_proto(desc: Descriptor) -> descriptor_pb2.Descriptor:
    out = descriptor_pb2.Descriptor(media_type=desc.media_type, digest=desc.digest, size=desc.size)
    out.annotations.update(desc.annotations or {})
    return out


class ImagesServicer(images_pb2_grpc.ImagesServicer):
    def __init__(self, db: MetadataDB, publish: Publisher) -> None:
        self.store = ImageStore(db)
        self.publish = publish

    def _publish(self, context: grpc.ServicerContext, namespace: str, topic: str, event: Any) -> None:
        try:
            self.publish(namespace, topic, event)
        except Exception as exc:  # containerd returns the publisher's error as is
            abort_with(context, exc)

    def Get(self, request: images_pb2.GetImageRequest, context: grpc.ServicerContext
            ) -> images_pb2.GetImageResponse:
        try:
            image = self.store.get(metadata_value(context, NAMESPACE_HEADER), request.name)
        except Exception as exc:
            abort_with(context, exc)
        return images_pb2.GetImageResponse(image=image_to_proto(image))

    def List(self, request: images_pb2.ListImagesRequest, context: grpc.ServicerContext
             ) -> images_pb2.ListImagesResponse:
        try:
            images = self.store.list(metadata_value(context, NAMESPACE_HEADER), list(request.filters))
        except Exception as exc:
            abort_with(context, exc)
        return images_pb2.ListImagesResponse(images=[image_to_proto(i) for i in images])

    def Create(self, request: images_pb2.CreateImageRequest, context: grpc.ServicerContext
               ) -> images_pb2.CreateImageResponse:
        if not request.image.name:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "Image.Name required")
        namespace = metadata_value(context, NAMESPACE_HEADER)
        epoch = codec.Timestamp.from_proto(request.source_date_epoch) \
            if request.HasField("source_date_epoch") else None
        try:
            created = self.store.create(namespace, image_from_proto(request.image), epoch=epoch,
                                        lease=metadata_value(context, LEASE_HEADER))
        except Exception as exc:
            abort_with(context, exc)
        response = images_pb2.CreateImageResponse(image=image_to_proto(created))
        event = events_pb2.ImageCreate(name=response.image.name)
        event.labels.update(response.image.labels)
        self._publish(context, namespace or "", "/images/create", event)
        return response

    def Update(self, request: images_pb2.UpdateImageRequest, context: grpc.ServicerContext
               ) -> images_pb2.UpdateImageResponse:
        if not request.image.name:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "Image.Name required")
        namespace = metadata_value(context, NAMESPACE_HEADER)
        paths = list(request.update_mask.paths) if request.HasField("update_mask") else []
        epoch = codec.Timestamp.from_proto(request.source_date_epoch) \
            if request.HasField("source_date_epoch") else None
        try:
            updated = self.store.update(namespace, image_from_proto(request.image), paths, epoch=epoch,
                                        lease=metadata_value(context, LEASE_HEADER))
        except Exception as exc:
            abort_with(context, exc)
        response = images_pb2.UpdateImageResponse(image=image_to_proto(updated))
        event = events_pb2.ImageUpdate(name=response.image.name)
        event.labels.update(response.image.labels)
        self._publish(context, namespace or "", "/images/update", event)
        return response

    def Delete(self, request: images_pb2.DeleteImageRequest, context: grpc.ServicerContext
               ) -> empty_pb2.Empty:
        namespace = metadata_value(context, NAMESPACE_HEADER)
        target_digest = request.target.digest if request.HasField("target") else None
        try:
            self.store.delete(namespace, request.name, target_digest=target_digest,
                              lease=metadata_value(context, LEASE_HEADER))
        except Exception as exc:
            abort_with(context, exc)
        self._publish(context, namespace or "", "/images/delete", events_pb2.ImageDelete(name=request.name))
        # request.sync asks to wait for garbage collection; boltimages runs no
        # collector (containerd's own GC still owns content), so there is
        # nothing to wait for and the delete is already durable
        return empty_pb2.Empty()
