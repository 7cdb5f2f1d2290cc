"""Streaming/Stream on our server alone: the worker limit it shares with event subscribers, and shutdown.

(What the stream answers, compared with a real containerd, is in tests/compat/test_transfer.py.)
"""

from __future__ import annotations

import queue
import threading
import time

import grpc
from google.protobuf import any_pb2

from boltimages.api.containerd.services.streaming.v1 import streaming_pb2

from .conftest import md

STREAM = "/containerd.services.streaming.v1.Streaming/Stream"


def _open(channel: grpc.Channel, stream_id: str) -> tuple[object, "queue.Queue[tuple]"]:
    """Open a stream; its answers (and final status) arrive in the returned queue."""
    init = any_pb2.Any(type_url="containerd.services.streaming.v1.StreamInit",
                       value=streaming_pb2.StreamInit(id=stream_id).SerializeToString())
    hold = threading.Event()

    def requests():
        yield init
        hold.wait(60)

    call = channel.stream_stream(STREAM, request_serializer=any_pb2.Any.SerializeToString,
                                 response_deserializer=any_pb2.Any.FromString)(requests(), metadata=md("default"),
                                                                              timeout=60)
    out: "queue.Queue[tuple]" = queue.Queue()

    def read() -> None:
        try:
            for message in call:
                out.put(("message", message.type_url))
            out.put(("end", "OK"))
        except grpc.RpcError as err:
            out.put(("end", err.code().name, err.details()))
        hold.set()

    threading.Thread(target=read, daemon=True).start()
    return call, out


def test_streams_share_the_long_call_limit_and_end_at_shutdown(serve) -> None:
    server = serve("--workers", "9")   # 9 workers - 8 reserved: one long call
    channel = server.channel()
    try:
        _, first = _open(channel, "one")
        assert first.get(timeout=10) == ("message", "google.protobuf.Empty")
        _, second = _open(channel, "two")
        end = second.get(timeout=10)
        assert end[:2] == ("end", "RESOURCE_EXHAUSTED") and "--workers" in end[2]
        started = time.monotonic()
        assert server.stop() == 0
        # closed by the shutdown, not left to the grace period's cancel
        assert first.get(timeout=10) == ("end", "OK")
        assert time.monotonic() - started < 5
    finally:
        channel.close()
