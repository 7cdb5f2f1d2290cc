"""The transport's per-client budgets (server/h2/limits.py) and RFC 9113's
malformed-request rules, one rule at a time on a real socket."""

from __future__ import annotations

import os
import socket
import struct
import threading
from concurrent import futures
from typing import Any, Iterator

import grpc
import pytest

from boltimages.server.h2 import NativeServer
from boltimages.server.h2 import frames as f
from boltimages.server.h2 import hpack
from boltimages.server.h2.limits import Limits
from tests.server.h2_attack import grpc_message, literal_indexed
from tests.server.test_h2_transport import Raw, response

SERVICE = "l.L"


class Handlers:
    def __init__(self) -> None:
        self.counted = 0
        self.lock = threading.Lock()
        self.gate = threading.Event()
        self.hold = threading.Event()

    def generic(self) -> grpc.GenericRpcHandler:
        def counted(request: bytes, context: Any) -> bytes:
            with self.lock:
                self.counted += 1
            return b"counted"

        def held(request: bytes, context: Any) -> bytes:
            self.hold.wait(10)
            return b"held"

        def gated(requests: Iterator[bytes], context: Any) -> bytes:
            self.gate.wait(10)
            return str(sum(len(r) for r in requests)).encode()

        def forever(request: bytes, context: Any) -> Iterator[bytes]:
            while context.is_active():
                yield b"tick"
                self.gate.wait(0.05)

        uu = grpc.unary_unary_rpc_method_handler
        return grpc.method_handlers_generic_handler(SERVICE, {
            "Counted": uu(counted), "Held": uu(held),
            "Gated": grpc.stream_unary_rpc_method_handler(gated),
            "Forever": grpc.unary_stream_rpc_method_handler(forever),
        })


class Server:
    def __init__(self, tmp: str, limits: Limits, max_recv: int = 16 << 20) -> None:
        self.handlers = Handlers()
        self.executor = futures.ThreadPoolExecutor(16)
        self.server = NativeServer(self.executor, max_receive_message_length=max_recv, inline_methods=(),
                                   limits=limits)
        self.server.add_generic_rpc_handlers((self.handlers.generic(),))
        self.path = os.path.join(tmp, "l.sock")
        self.server.add_insecure_port("unix:" + self.path)
        self.server.start()

    def stop(self) -> None:
        self.handlers.gate.set()
        self.handlers.hold.set()
        assert self.server.stop(1.0).wait(10)
        self.executor.shutdown(wait=True, cancel_futures=True)


@pytest.fixture
def make(tmp_path: Any) -> Iterator[Any]:
    started: list[Server] = []

    def start(limits: Limits = Limits(), **kw: Any) -> Server:
        sub = tmp_path / str(len(started))
        sub.mkdir()
        started.append(Server(str(sub), limits, **kw))
        return started[-1]
    yield start
    for server in started:
        server.stop()


def block(method: str, *extra: tuple[bytes, bytes]) -> bytes:
    return hpack.encode_headers([(b":method", b"POST"), (b":scheme", b"http"), (b":path", f"/{SERVICE}/{method}".encode()),
                                 (b"content-type", b"application/grpc"), *extra])


def call(sid: int, method: str, body: bytes = b"", *extra: tuple[bytes, bytes]) -> bytes:
    return (f.frame(f.HEADERS, f.FLAG_END_HEADERS, sid, block(method, *extra))
            + f.frame(f.DATA, f.FLAG_END_STREAM, sid, grpc_message(body)))


def next_of(raw: Raw, ftype: int) -> tuple[int, int, int, bytes]:
    while True:
        fr = raw.frame()
        assert fr is not None, f"no frame of type {ftype}"
        if fr[0] == ftype:
            return fr


def test_max_concurrent_streams_is_advertised_and_enforced(make: Any) -> None:
    server = make(Limits(max_concurrent_streams=2))
    raw = Raw(server.path)
    _, _, _, payload = next_of(raw, f.SETTINGS)
    assert (f.SETTINGS_MAX_CONCURRENT_STREAMS, 2) in f.parse_settings(payload)
    held = f.frame(f.HEADERS, f.FLAG_END_HEADERS, 1, block("Held")) + f.frame(f.HEADERS, f.FLAG_END_HEADERS, 3, block("Held"))
    raw.send(held + f.frame(f.HEADERS, f.FLAG_END_HEADERS, 5, block("Held")))
    _, _, sid, code = next_of(raw, f.RST_STREAM)
    assert sid == 5 and struct.unpack(">I", code)[0] == f.REFUSED_STREAM
    server.handlers.hold.set()
    raw.send(f.frame(f.DATA, f.FLAG_END_STREAM, 1, grpc_message(b"")))
    data, trailers, _ = response(raw, 1)
    assert data.endswith(b"held") and trailers[b"grpc-status"] == b"0"
    raw.send(call(7, "Counted"))  # a stream finished: room again
    assert response(raw, 7)[1][b"grpc-status"] == b"0"
    raw.close()


def test_a_reset_call_never_runs(make: Any) -> None:
    # one pool turn per connection: stream 3 waits behind stream 1, and is reset while it waits
    server = make(Limits(max_pooled_per_connection=1))
    raw = Raw(server.path)
    raw.send(call(1, "Held") + call(3, "Counted") + f.rst_stream(3, f.CANCEL) + call(5, "Counted"))
    server.handlers.hold.set()
    assert response(raw, 1)[1][b"grpc-status"] == b"0"
    assert response(raw, 5)[1][b"grpc-status"] == b"0"
    assert server.handlers.counted == 1
    raw.close()


def test_streaming_calls_share_one_cap(make: Any) -> None:
    server = make(Limits(max_streaming_calls=2))
    channel = grpc.insecure_channel("unix://" + server.path)
    forever = channel.unary_stream(f"/{SERVICE}/Forever")
    first, second = forever(b"", timeout=30), forever(b"", timeout=30)
    assert next(first) == next(second) == b"tick"
    third = forever(b"", timeout=30)
    with pytest.raises(grpc.RpcError) as err:
        next(third)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    first.cancel()
    # the cancelled stream's slot is free as soon as the server has seen the cancellation
    # (on this one connection, after the RST_STREAM that tells it)
    fourth = forever(b"", timeout=30)
    assert next(fourth) == b"tick"
    fourth.cancel()
    assert channel.unary_unary(f"/{SERVICE}/Counted")(b"", timeout=10) == b"counted"
    second.cancel()
    channel.close()


def test_connection_window_is_granted_as_messages_are_consumed(make: Any) -> None:
    # the smallest budget: the initial 65,535-byte connection window, never topped
    # up while the handler takes nothing
    server = make(Limits(connection_buffer=1), max_recv=1000)
    raw = Raw(server.path)
    raw.send(f.frame(f.HEADERS, f.FLAG_END_HEADERS, 1, block("Gated")))
    message = grpc_message(b"m" * 995)  # 1,000 bytes
    raw.send(data_frames(1, message * 65 + message[:535]))  # exactly 65,535
    raw.send(f.frame(f.DATA, 0, 1, b"x"))  # one byte beyond what was granted
    assert raw.goaway_code() == f.FLOW_CONTROL_ERROR
    raw.close()
    # and once the handler consumes, the window comes back
    raw = Raw(server.path)
    raw.send(f.frame(f.HEADERS, f.FLAG_END_HEADERS, 1, block("Gated")))
    raw.send(data_frames(1, message * 65))
    server.handlers.gate.set()
    _, _, sid, increment = next_of(raw, f.WINDOW_UPDATE)
    while sid != 0:
        _, _, sid, increment = next_of(raw, f.WINDOW_UPDATE)
    assert struct.unpack(">I", increment)[0] >= 32768
    raw.send(data_frames(1, message * 20, end=True))
    data, trailers, _ = response(raw, 1)
    assert data[5:] == str(85 * 995).encode()
    raw.close()


def data_frames(sid: int, data: bytes, end: bool = False) -> bytes:
    """``data`` as DATA frames of at most 16,000 bytes."""
    pieces = [data[i:i + 16000] for i in range(0, len(data), 16000)]
    return b"".join(f.frame(f.DATA, f.FLAG_END_STREAM if end and i == len(pieces) - 1 else 0, sid, piece)
                    for i, piece in enumerate(pieces))


def _reset_code(raw: Raw, sid: int) -> int:
    while True:
        fr = raw.frame()
        assert fr is not None, "no RST_STREAM"
        if fr[0] == f.RST_STREAM and fr[2] == sid:
            return struct.unpack(">I", fr[3])[0]
        assert fr[0] != f.GOAWAY, "the connection ended"


def test_self_dependent_headers_are_decoded_then_reset(make: Any) -> None:
    """RFC 9113 4.3/5.3.1: the block still enters the dynamic table, so the next
    request that refers to it decodes (before, it ended the connection)."""
    server = make()
    raw = Raw(server.path)
    indexed = block("Counted") + literal_indexed(b"x-tag", b"tagged")
    priority = struct.pack(">IB", 1, 16)  # stream 1 depends on stream 1
    raw.send(f.frame(f.HEADERS, f.FLAG_END_HEADERS | f.FLAG_END_STREAM | f.FLAG_PRIORITY, 1, priority + indexed))
    assert _reset_code(raw, 1) == f.PROTOCOL_ERROR
    # index 62 is the newest dynamic entry: x-tag: tagged
    raw.send(f.frame(f.HEADERS, f.FLAG_END_HEADERS, 3, block("Counted") + b"\xbe")
             + f.frame(f.DATA, f.FLAG_END_STREAM, 3, grpc_message(b"")))
    assert response(raw, 3)[1][b"grpc-status"] == b"0"
    assert server.handlers.counted == 1
    raw.close()


@pytest.mark.parametrize("headers", [
    [(b":method", b"POST"), (b":scheme", b"http"), (b":path", f"/{SERVICE}/Counted".encode()),
     (b"Content-Type", b"application/grpc")],
    [(b":method", b"POST"), (b"content-type", b"application/grpc"), (b":scheme", b"http"),
     (b":path", f"/{SERVICE}/Counted".encode())],
], ids=["uppercase name", "pseudo-header after a regular one"])
def test_malformed_requests_are_stream_errors(make: Any, headers: list[tuple[bytes, bytes]]) -> None:
    server = make()
    raw = Raw(server.path)
    raw.send(f.frame(f.HEADERS, f.FLAG_END_HEADERS | f.FLAG_END_STREAM, 1, hpack.encode_headers(headers)))
    assert _reset_code(raw, 1) == f.PROTOCOL_ERROR
    raw.send(call(3, "Counted"))
    assert response(raw, 3)[1][b"grpc-status"] == b"0"
    assert server.handlers.counted == 1
    raw.close()


def test_rate_limits_end_the_connection_calmly(make: Any) -> None:
    server = make(Limits(ping_burst=5, ping_rate=0.001))
    raw = Raw(server.path)
    raw.send(f.frame(f.PING, 0, 0, b"12345678") * 6)
    assert raw.goaway_code() == f.ENHANCE_YOUR_CALM
    raw.close()


def test_server_wide_stream_budget_spares_light_clients(make: Any) -> None:
    server = make(Limits(max_concurrent_streams=10, max_streams_total=12, light_client_streams=2))
    heavy, second, light = Raw(server.path), Raw(server.path), Raw(server.path)
    heavy.send(b"".join(f.frame(f.HEADERS, f.FLAG_END_HEADERS, sid, block("Held")) for sid in range(1, 20, 2)))
    heavy.send(f.frame(f.PING, 0, 0, b"heavy---"))
    assert next_of(heavy, f.PING)[3] == b"heavy---"  # all ten are open by now
    second.send(b"".join(f.frame(f.HEADERS, f.FLAG_END_HEADERS, sid, block("Held")) for sid in (1, 3, 5)))
    _, _, sid, code = next_of(second, f.RST_STREAM)  # the third: the budget (12) is reached
    assert sid == 5 and struct.unpack(">I", code)[0] == f.REFUSED_STREAM
    light.send(call(1, "Counted"))  # a connection with fewer than 2 streams still gets through
    assert response(light, 1)[1][b"grpc-status"] == b"0"
    for raw in (heavy, second, light):
        raw.close()


def _server_send_buffers(server: Server) -> list[int]:
    return [conn.transport.get_extra_info("socket").getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
            for conn in list(server.server.connections) if conn.transport is not None]


def _sysctl(name: str) -> int:
    with open(f"/proc/sys/net/core/{name}") as fh:
        return int(fh.read())


@pytest.mark.parametrize("asked", [1 << 20, 0])
def test_unix_connections_ask_for_the_send_buffer(make: Any, asked: int) -> None:
    server = make(Limits(send_buffer=asked))
    raw = Raw(server.path)
    next_of(raw, f.SETTINGS)  # written from connection_made: the socket is set up
    # Linux doubles what it grants and caps the request at wmem_max; 0 keeps its default
    want = 2 * min(asked, _sysctl("wmem_max")) if asked else _sysctl("wmem_default")
    assert _server_send_buffers(server) == [max(want, _sysctl("wmem_default"))]
    raw.send(call(1, "Counted"))
    assert response(raw, 1)[1][b"grpc-status"] == b"0"
    raw.close()
