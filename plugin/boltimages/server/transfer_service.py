"""containerd.services.transfer.v1.Transfer, for the one transfer that is metadata only.

ctr 2.x tags an image (``ctr images tag SRC DST`` without ``--local``) with a
Transfer whose source and destination are both
``containerd.types.transfer.ImageStore``: the destination name gets the
source's target. That touches image records only, so we serve it, with
containerd 2.x's semantics (observed on a real 2.1.9):

* the target is created, or overwritten when it exists (no ``--force``
  needed), and its labels become the destination's labels: the source's are
  not copied and an existing target's are dropped (tagging an image onto
  itself clears its labels, as in containerd);
* a missing source is NotFound (``image "x": not found``), an empty
  destination name NotFound (``no image name found: not found``);
* ``/images/create`` or ``/images/update`` is published in the caller's
  namespace;
* checks run in containerd's order: progress stream, source type,
  destination type, then the namespace.

Every other transfer moves content (registry pull/push, archive import and
export) and answers Unimplemented saying that a real containerd is needed.
A request naming a ``progress_stream`` uses the stream a client opened with
Streaming/Stream (server/streaming_service.py) and closes it when done; a
tag sends no progress message before that, as on 2.1.9. No such stream:
NotFound ``not found``, containerd's answer.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import grpc
from google.protobuf import any_pb2, descriptor_pool, empty_pb2
from google.protobuf.message import DecodeError

from ..api.containerd.events import image_pb2 as events_pb2
from ..api.containerd.services.transfer.v1 import transfer_pb2, transfer_pb2_grpc
from ..api.containerd.types.transfer import imagestore_pb2
from ..errors import AlreadyExists, NotFound, go_quote
from ..store.db import MetadataDB
from ..store.images import Image, ImageStore
from .images_service import LEASE_HEADER, metadata_value
from .status import BAD_WIRE_FORMAT, RawStatus, grpc_errors, namespace, request_namespace
from .streaming_service import StreamRegistry

Publish = Callable[[str, str, Any], None]

IMAGE_STORE_TYPE = imagestore_pb2.ImageStore.DESCRIPTOR.full_name
#: containerd's transfer types that move content: pulls, pushes, imports, exports
CONTENT_TYPES = frozenset({
    "containerd.types.transfer.OCIRegistry",
    "containerd.types.transfer.ImageImportStream",
    "containerd.types.transfer.ImageExportStream",
})
#: how often a tag retries when its target is deleted between Create and
#: Update (containerd loops without a bound; a hostile client deleting in a
#: tight loop must not hold a worker for ever)
MAX_TAG_ATTEMPTS = 16


class TransferTypeUnknown(RawStatus):
    """An Any whose type no registry knows: containerd's typeurl error, code Unknown."""

    def __init__(self, type_url: str) -> None:
        super().__init__(grpc.StatusCode.UNKNOWN, f"type with url {type_url}: not found")


def _needs_containerd(source: str, destination: str) -> RawStatus:
    return RawStatus(grpc.StatusCode.UNIMPLEMENTED,
                     f"boltimages serves image metadata only: a transfer from {source or '(none)'} "
                     f"to {destination or '(none)'} moves content and needs a real containerd")


def _known_message(type_url: str) -> bool:
    """Whether ``type_url`` names a protobuf message this server knows (any
    prefix up to the last '/' is ignored, as protobuf's Any resolution does)."""
    name = type_url.rsplit("/", 1)[-1]
    if not name:
        return False
    try:
        descriptor_pool.Default().FindMessageTypeByName(name)
        return True
    except KeyError:
        return False


def _image_store(value: any_pb2.Any) -> Optional[imagestore_pb2.ImageStore]:
    """The ImageStore an Any holds; None for another known type, which is
    checked only once both ends are known (containerd converts both first)."""
    url = value.type_url
    if url == IMAGE_STORE_TYPE:
        try:
            return imagestore_pb2.ImageStore.FromString(value.value)
        except DecodeError:
            raise RawStatus(grpc.StatusCode.UNKNOWN, BAD_WIRE_FORMAT) from None
    if url in CONTENT_TYPES or _known_message(url):
        return None
    raise TransferTypeUnknown(url)


class TransferServicer(transfer_pb2_grpc.TransferServicer):
    def __init__(self, db: MetadataDB, publish: Publish, streams: Optional[StreamRegistry] = None) -> None:
        self.images = ImageStore(db)
        self.publish = publish
        self.streams = streams or StreamRegistry()

    @grpc_errors
    def Transfer(self, request: transfer_pb2.TransferRequest, context: grpc.ServicerContext) -> empty_pb2.Empty:
        if not request.options.progress_stream:
            return self._transfer(request, context)
        # containerd looks the stream up first, under the raw namespace header,
        # and closes it once the transfer ends, whatever the outcome
        stream = self.streams.take(request_namespace(context) or "", request.options.progress_stream)
        try:
            return self._transfer(request, context)
        finally:
            stream.close()

    def _transfer(self, request: transfer_pb2.TransferRequest, context: grpc.ServicerContext) -> empty_pb2.Empty:
        source = _image_store(request.source)
        destination = _image_store(request.destination)
        src_url, dst_url = request.source.type_url, request.destination.type_url
        if source is None or destination is None:
            if src_url in CONTENT_TYPES or dst_url in CONTENT_TYPES:
                raise _needs_containerd(src_url, dst_url)
            raise RawStatus(grpc.StatusCode.UNIMPLEMENTED,
                            f"method Transfer not implemented for {src_url} to {dst_url}")
        if destination.extra_references:
            # containerd derives these names from the target's annotations
            # (import semantics); not needed by any tag, so not guessed at
            raise RawStatus(grpc.StatusCode.UNIMPLEMENTED,
                            "boltimages serves image-store transfers without extra_references; "
                            "use a real containerd for reference expansion")
        self._tag(namespace(context), source, destination, metadata_value(context, LEASE_HEADER))
        return empty_pb2.Empty()

    def _tag(self, ns: str, source: imagestore_pb2.ImageStore, destination: imagestore_pb2.ImageStore,
             lease: Optional[str]) -> None:
        target = self.images.get(ns, source.name).target
        if not destination.name:
            raise NotFound("no image name found")
        wanted = Image(name=destination.name, labels=dict(destination.labels) or None, target=target)
        for _ in range(MAX_TAG_ATTEMPTS):
            try:
                stored = self.images.create(ns, wanted, lease=lease)
                topic, event_cls = "/images/create", events_pb2.ImageCreate
            except AlreadyExists:
                try:
                    stored = self.images.update(ns, wanted, lease=lease)
                except NotFound:
                    continue  # deleted in between: create again, as containerd does
                topic, event_cls = "/images/update", events_pb2.ImageUpdate
            self.publish(ns, topic, event_cls(name=stored.name, labels=stored.labels or {}))
            return
        raise RawStatus(grpc.StatusCode.ABORTED,
                        f"image {go_quote(destination.name)} kept changing while being tagged; try again")

