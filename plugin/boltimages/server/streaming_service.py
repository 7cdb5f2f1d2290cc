"""containerd.services.streaming.v1.Streaming: the streams Transfer reports progress on.

A client opens Stream, sends a StreamInit (in an Any) naming an id, and
gets an empty acknowledgement once the stream is registered under that id
in the call's namespace. A Transfer naming the id as its progress_stream
then uses it and closes it when the transfer ends (success or failure),
which ends the Stream call with OK. Observed on a real 2.1.9: an image-store
tag sends no progress message at all before the close, a StreamInit in
another namespace (or none) is not found by the Transfer (NotFound
``not found``), and an Any of an unknown type is Unknown
``type with url X: not found``; an id already open in the namespace is
Unknown ``already exists``. containerd's garbage collector also closes
streams that no lease holds, whenever it runs; we run no collector, so a
stream lives until the transfer naming it ends or its client goes away.

Each open stream holds a worker thread, like an event subscription, so open
streams and subscriptions share one limit; beyond it a new stream is
refused with RESOURCE_EXHAUSTED rather than starving ordinary calls.
"""

from __future__ import annotations

import threading
from typing import Callable, Iterator, Optional

import grpc
from google.protobuf import any_pb2
from google.protobuf.message import DecodeError

from ..api.containerd.services.streaming.v1 import streaming_pb2, streaming_pb2_grpc
from ..errors import AlreadyExists, NotFound
from .status import BAD_WIRE_FORMAT, RawStatus, grpc_errors, request_namespace

STREAM_INIT_TYPE = streaming_pb2.StreamInit.DESCRIPTOR.full_name
#: containerd's acknowledgement: an empty google.protobuf.Empty, type_url without a prefix
ACK = any_pb2.Any(type_url="google.protobuf.Empty")
#: how often a waiting stream looks at its call (the close itself wakes it at once)
_POLL_SECONDS = 0.5


class OpenStream:
    """A registered stream; closing it ends its Stream call."""

    def __init__(self, registry: "StreamRegistry", key: tuple[str, str]) -> None:
        self._registry = registry
        self.key = key
        self.closed = threading.Event()

    def close(self) -> None:
        if not self.closed.is_set():
            self.closed.set()
            self._registry._remove(self)


class StreamRegistry:
    """Streams by (namespace, id), as containerd's streaming manager keeps them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._streams: dict[tuple[str, str], OpenStream] = {}
        self._closed = False

    def register(self, namespace: str, stream_id: str) -> OpenStream:
        key = (namespace, stream_id)
        with self._lock:
            if key in self._streams:
                # containerd returns its bare sentinel, unconverted: Unknown "already exists"
                raise RawStatus(grpc.StatusCode.UNKNOWN, AlreadyExists().message)
            stream = OpenStream(self, key)
            if self._closed:
                stream.closed.set()
            else:
                self._streams[key] = stream
        return stream

    def take(self, namespace: str, stream_id: str) -> OpenStream:
        """The stream a Transfer names (NotFound ``not found``, containerd's words, when none)."""
        with self._lock:
            stream = self._streams.get((namespace, stream_id))
        if stream is None:
            raise NotFound()
        return stream

    def count(self) -> int:
        with self._lock:
            return len(self._streams)

    def close(self) -> None:
        """Server shutdown: end every open stream cleanly."""
        with self._lock:
            self._closed = True
            streams = list(self._streams.values())
        for stream in streams:
            stream.close()

    def _remove(self, stream: OpenStream) -> None:
        with self._lock:
            if self._streams.get(stream.key) is stream:
                del self._streams[stream.key]


class StreamingServicer(streaming_pb2_grpc.StreamingServicer):
    def __init__(self, registry: StreamRegistry, max_open: int = 0,
                 others_open: Callable[[], int] = lambda: 0) -> None:
        self.registry = registry
        # open streams and event subscriptions (others_open) each hold a
        # worker thread; together they stay below max_open (0: no limit)
        self.max_open = max_open
        self.others_open = others_open

    @grpc_errors
    def Stream(self, request_iterator: Iterator[any_pb2.Any], context: grpc.ServicerContext) -> Iterator[any_pb2.Any]:
        if self.max_open and self.registry.count() + self.others_open() >= self.max_open:
            raise RawStatus(grpc.StatusCode.RESOURCE_EXHAUSTED,
                            f"too many open streams and event subscribers ({self.max_open}); raise --workers")
        first: Optional[any_pb2.Any] = next(request_iterator, None)
        if first is None:
            # the client ended its side before saying which stream it opens
            raise RawStatus(grpc.StatusCode.UNKNOWN, "EOF")
        if first.type_url != STREAM_INIT_TYPE:
            raise RawStatus(grpc.StatusCode.UNKNOWN, f"type with url {first.type_url}: not found")
        try:
            init = streaming_pb2.StreamInit.FromString(first.value)
        except DecodeError:
            raise RawStatus(grpc.StatusCode.UNKNOWN, BAD_WIRE_FORMAT) from None
        stream = self.registry.register(request_namespace(context) or "", init.id)
        context.add_callback(stream.close)  # a client hanging up frees the id at once
        try:
            yield ACK
            while context.is_active() and not stream.closed.wait(_POLL_SECONDS):
                pass
        finally:
            stream.close()
