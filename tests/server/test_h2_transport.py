"""Our HTTP/2 transport (server/h2) on a real socket: raw frames and grpcio clients.

The raw-socket tests speak HTTP/2 byte by byte to check what grpc clients
never do (hostile frames, tiny windows); the grpcio-client tests check that a
real gRPC implementation sees grpcio-compatible statuses and messages.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import struct
import threading
import time
from concurrent import futures
from typing import Any, Iterator, Optional

import grpc
import pytest

from boltimages.server.h2 import NativeServer
from boltimages.server.h2 import frames as f
from boltimages.server.h2 import hpack
from boltimages.server.h2.grpc_call import percent_decode
from tests.helpers import slow_budget

SERVICE = "t.T"
MiB = 1 << 20


class Probe:
    """What the test handlers saw; shared between handler threads and the test."""

    def __init__(self) -> None:
        self.stream_ended = threading.Event()
        self.callback_ran = threading.Event()
        self.slow_started = threading.Event()
        self.slow_done = threading.Event()
        self.barrier = threading.Barrier(16, timeout=10)


def _handlers(probe: Probe) -> grpc.GenericRpcHandler:
    def echo(request: bytes, context: Any) -> bytes:
        return request

    def big(request: bytes, context: Any) -> bytes:
        return b"b" * int(request or b"0")

    def size(request: bytes, context: Any) -> bytes:
        return str(len(request)).encode()

    def boom(request: bytes, context: Any) -> bytes:
        raise ValueError("boom")

    def abort(request: bytes, context: Any) -> bytes:
        context.abort(grpc.StatusCode.NOT_FOUND, request.decode("utf-8"))
        return b""

    def slow(request: bytes, context: Any) -> bytes:
        context.add_callback(probe.callback_ran.set)
        probe.slow_started.set()
        time.sleep(float(request or b"1"))  # the call's work, not synchronisation
        probe.slow_done.set()
        return b"slow"

    def together(request: bytes, context: Any) -> bytes:
        probe.barrier.wait()  # only returns once 16 calls run at the same time
        return b"ok"

    def forever(request: bytes, context: Any) -> Iterator[bytes]:
        context.add_callback(probe.callback_ran.set)
        try:
            i = 0
            while True:
                yield b"%d" % i
                i += 1
                time.sleep(0.01)
        finally:
            probe.stream_ended.set()

    def chunks(request: bytes, context: Any) -> Iterator[bytes]:
        count, size_ = (int(x) for x in request.split(b","))
        for i in range(count):
            yield bytes([i % 256]) * size_

    def bidi(requests: Iterator[bytes], context: Any) -> Iterator[bytes]:
        for request in requests:
            yield request.upper()

    def total(requests: Iterator[bytes], context: Any) -> bytes:
        return str(sum(len(r) for r in requests)).encode()

    def with_status(request: bytes, context: Any) -> bytes:
        class Status(grpc.Status):
            code = grpc.StatusCode.FAILED_PRECONDITION
            details = "precondition"
            trailing_metadata = (("why-bin", b"\x00\x01"), ("who", "test"))
        context.abort_with_status(Status())
        return b""

    def meta(request: bytes, context: Any) -> bytes:
        md = dict(context.invocation_metadata())
        context.send_initial_metadata((("initial", md.get("x-echo", "")),))
        context.set_trailing_metadata((("trailing", "t"),))
        remaining = context.time_remaining()
        assert remaining is not None and 0 < remaining <= 31  # clients round the timeout up
        assert context.peer().startswith("unix:") and context.is_active()
        if request == b"code":
            context.set_code(grpc.StatusCode.NOT_FOUND)
            context.set_details("set, not raised")
        return b"meta"

    uu = grpc.unary_unary_rpc_method_handler
    return grpc.method_handlers_generic_handler(SERVICE, {
        "Echo": uu(echo), "Big": uu(big), "Size": uu(size), "Boom": uu(boom), "Abort": uu(abort),
        "Slow": uu(slow), "Together": uu(together), "WithStatus": uu(with_status), "Meta": uu(meta),
        "Forever": grpc.unary_stream_rpc_method_handler(forever),
        "Chunks": grpc.unary_stream_rpc_method_handler(chunks),
        "Bidi": grpc.stream_stream_rpc_method_handler(bidi),
        "Total": grpc.stream_unary_rpc_method_handler(total),
    })


class Running:
    def __init__(self, tmp: str, max_recv: int = 16 * MiB) -> None:
        self.probe = Probe()
        self.executor = futures.ThreadPoolExecutor(32)
        inline = [f"/{SERVICE}/Echo", f"/{SERVICE}/Big", f"/{SERVICE}/Boom", f"/{SERVICE}/Abort"]
        self.server = NativeServer(self.executor, max_receive_message_length=max_recv,
                                   max_send_message_length=16 * MiB, inline_methods=inline)
        # handlers that sleep or wait for each other run in the pool, as List
        # does in the real server: on the loop thread they would hold up
        # every other frame
        self.server.always_pooled = frozenset((f"/{SERVICE}/Slow", f"/{SERVICE}/Together"))
        self.server.add_generic_rpc_handlers((_handlers(self.probe),))
        self.path = os.path.join(tmp, "h2.sock")
        self.server.add_insecure_port("unix:" + self.path)
        self.server.start()
        self.channel = grpc.insecure_channel("unix://" + self.path, options=[
            ("grpc.max_receive_message_length", 16 * MiB), ("grpc.max_send_message_length", 16 * MiB)])

    def method(self, name: str, kind: str = "unary_unary") -> Any:
        return getattr(self.channel, kind)(f"/{SERVICE}/{name}")

    def stop(self) -> None:
        self.channel.close()
        assert self.server.stop(1.0).wait(10), "server did not stop"
        self.executor.shutdown(wait=True, cancel_futures=True)


@pytest.fixture
def served(tmp_path: Any) -> Iterator[Running]:
    running = Running(str(tmp_path))
    yield running
    running.stop()


# ---------------------------------------------------------------- raw client
class Raw:
    """A hand-driven HTTP/2 client on the server's unix socket."""

    def __init__(self, path: str, settings: Optional[dict[int, int]] = None, preface: bool = True) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(5)
        self.sock.connect(path)
        self.buf = b""
        if preface:
            self.send(f.CLIENT_PREFACE + f.settings(settings or {}))

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self, n: int) -> bool:
        while len(self.buf) < n:
            try:
                chunk = self.sock.recv(1 << 20)
            except (ConnectionResetError, socket.timeout):
                return False
            if not chunk:
                return False
            self.buf += chunk
        return True

    def frame(self) -> Optional[tuple[int, int, int, bytes]]:
        """Next frame, or None at EOF / after 5 s of silence."""
        if not self._fill(f.FRAME_HEADER_LEN):
            return None
        length, ftype, flags, sid = f.parse_header(self.buf)
        if not self._fill(f.FRAME_HEADER_LEN + length):
            return None
        payload = self.buf[f.FRAME_HEADER_LEN:f.FRAME_HEADER_LEN + length]
        self.buf = self.buf[f.FRAME_HEADER_LEN + length:]
        return ftype, flags, sid, payload

    def request(self, sid: int, method: str, body: bytes, flag: int = 0, end: bool = True) -> None:
        block = hpack.encode_headers([(b":method", b"POST"), (b":scheme", b"http"),
                                      (b":path", f"/{SERVICE}/{method}".encode()), (b":authority", b"x"),
                                      (b"content-type", b"application/grpc"), (b"te", b"trailers")])
        self.send(f.frame(f.HEADERS, f.FLAG_END_HEADERS, sid, block))
        message = bytes([flag]) + struct.pack(">I", len(body)) + body
        self.send(f.frame(f.DATA, f.FLAG_END_STREAM if end else 0, sid, message))

    def goaway_code(self) -> Optional[int]:
        """Read until GOAWAY; its error code (None if the server never sent one)."""
        while True:
            fr = self.frame()
            if fr is None:
                return None
            if fr[0] == f.GOAWAY:
                return struct.unpack(">I", fr[3][4:8])[0]

    def closed(self) -> bool:
        """True when the server has closed the connection (EOF)."""
        while True:
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                return True
            except socket.timeout:
                return False
            if not chunk:
                return True

    def close(self) -> None:
        self.sock.close()


def response(raw: Raw, sid: int, auto_window: bool = False) -> tuple[bytes, dict[bytes, bytes], list[int]]:
    """(DATA bytes, trailer fields, DATA frame sizes) of stream ``sid``."""
    decoder = hpack.Decoder()
    data = b""
    sizes = []
    trailers: dict[bytes, bytes] = {}
    while True:
        fr = raw.frame()
        assert fr is not None, "connection ended before the response did"
        ftype, flags, fsid, payload = fr
        if fsid != sid:
            continue
        if ftype == f.DATA:
            data += payload
            sizes.append(len(payload))
            if auto_window and payload:
                raw.send(f.window_update(0, len(payload)) + f.window_update(sid, len(payload)))
        elif ftype == f.HEADERS:
            block = payload
            while not flags & f.FLAG_END_HEADERS:  # the rest of the block follows in CONTINUATION frames
                more = raw.frame()
                assert more is not None and more[0] == f.CONTINUATION and more[2] == sid
                block += more[3]
                flags = (flags & f.FLAG_END_STREAM) | more[1]
            for name, value in decoder.decode(block):
                trailers[name] = value
            if flags & f.FLAG_END_STREAM:
                return data, trailers, sizes
        elif ftype == f.RST_STREAM:
            raise AssertionError(f"stream reset with {struct.unpack('>I', payload)[0]}")


# ---------------------------------------------------------------- raw protocol
def test_unary_call_and_ping(served: Running) -> None:
    raw = Raw(served.path)
    raw.send(f.frame(0xEE, 0xFF, 0, b"unknown types are ignored") + f.frame(f.PING, 0, 0, b"12345678"))
    raw.request(1, "Echo", b"hello")
    data, trailers, _ = response(raw, 1)
    assert data == b"\x00\x00\x00\x00\x05hello"
    assert trailers[b":status"] == b"200" and trailers[b"grpc-status"] == b"0"
    raw.close()
    raw = Raw(served.path)
    raw.send(f.frame(0xEE, 0, 0, b"x") + f.frame(f.PING, 0, 0, b"abcdefgh"))
    while True:
        fr = raw.frame()
        assert fr is not None
        if fr[0] == f.PING:
            assert fr[1] & f.FLAG_ACK and fr[3] == b"abcdefgh"
            break
    raw.close()


def _headers_block(path: bytes = b"/t.T/Echo") -> bytes:
    return hpack.encode_headers([(b":method", b"POST"), (b":scheme", b"http"), (b":path", path),
                                 (b"content-type", b"application/grpc")])


HOSTILE = {
    "frame larger than SETTINGS_MAX_FRAME_SIZE": (f.frame_header(16385, f.DATA, 0, 1) + b"x" * 16385,
                                                  f.FRAME_SIZE_ERROR),
    "CONTINUATION interleaved with PING": (f.frame(f.HEADERS, 0, 1, _headers_block()[:3])
                                           + f.frame(f.PING, 0, 0, b"12345678"), f.PROTOCOL_ERROR),
    "CONTINUATION on another stream": (f.frame(f.HEADERS, 0, 1, _headers_block()[:3])
                                       + f.frame(f.CONTINUATION, f.FLAG_END_HEADERS, 3, _headers_block()[3:]),
                                       f.PROTOCOL_ERROR),
    "CONTINUATION without HEADERS": (f.frame(f.CONTINUATION, f.FLAG_END_HEADERS, 1, b"\x82"), f.PROTOCOL_ERROR),
    "PING of 7 bytes": (f.frame(f.PING, 0, 0, b"1234567"), f.FRAME_SIZE_ERROR),
    "PING on a stream": (f.frame(f.PING, 0, 1, b"12345678"), f.PROTOCOL_ERROR),
    "connection WINDOW_UPDATE of 0": (f.window_update(0, 0), f.PROTOCOL_ERROR),
    "WINDOW_UPDATE of 3 bytes": (f.frame(f.WINDOW_UPDATE, 0, 0, b"\x00\x00\x01"), f.FRAME_SIZE_ERROR),
    "connection window overflow": (f.window_update(0, f.MAX_WINDOW_SIZE), f.FLOW_CONTROL_ERROR),
    "SETTINGS of 5 bytes": (f.frame(f.SETTINGS, 0, 0, b"\x00\x04\x00\x00\x00"), f.FRAME_SIZE_ERROR),
    "SETTINGS on a stream": (f.frame(f.SETTINGS, 0, 1, b""), f.PROTOCOL_ERROR),
    "SETTINGS ack with payload": (f.frame(f.SETTINGS, f.FLAG_ACK, 0, b"\x00\x04\x00\x00\x00\x01"),
                                  f.FRAME_SIZE_ERROR),
    "initial window above 2^31-1": (f.settings({f.SETTINGS_INITIAL_WINDOW_SIZE: 1 << 31}), f.FLOW_CONTROL_ERROR),
    "max frame size below 16384": (f.settings({f.SETTINGS_MAX_FRAME_SIZE: 100}), f.PROTOCOL_ERROR),
    "enable push 2": (f.settings({f.SETTINGS_ENABLE_PUSH: 2}), f.PROTOCOL_ERROR),
    "HEADERS on an even stream": (f.frame(f.HEADERS, f.FLAG_END_HEADERS, 2, _headers_block()), f.PROTOCOL_ERROR),
    "HEADERS on stream 0": (f.frame(f.HEADERS, f.FLAG_END_HEADERS, 0, _headers_block()), f.PROTOCOL_ERROR),
    "DATA on an idle stream": (f.frame(f.DATA, 0, 5, b"abc"), f.PROTOCOL_ERROR),
    "DATA on stream 0": (f.frame(f.DATA, 0, 0, b"abc"), f.PROTOCOL_ERROR),
    "RST_STREAM on an idle stream": (f.rst_stream(9, f.CANCEL), f.PROTOCOL_ERROR),
    "padding longer than the frame": (f.frame(f.HEADERS, f.FLAG_END_HEADERS | f.FLAG_PADDED, 1,
                                              b"\xff" + _headers_block()), f.PROTOCOL_ERROR),
    "undecodable header block": (f.frame(f.HEADERS, f.FLAG_END_HEADERS, 1, b"\x80"), f.COMPRESSION_ERROR),
    "header index past the table": (f.frame(f.HEADERS, f.FLAG_END_HEADERS, 1, b"\xff\x10"), f.COMPRESSION_ERROR),
    "PUSH_PROMISE from a client": (f.frame(f.PUSH_PROMISE, f.FLAG_END_HEADERS, 1, b"\x00\x00\x00\x02\x82"),
                                   f.PROTOCOL_ERROR),
    "HEADERS reopening a closed stream": (f.frame(f.HEADERS, f.FLAG_END_HEADERS, 3, _headers_block())
                                          + f.rst_stream(3, f.CANCEL)
                                          + f.frame(f.HEADERS, f.FLAG_END_HEADERS, 1, _headers_block()),
                                          f.STREAM_CLOSED),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_frames_end_the_connection_with_the_right_code(served: Running, name: str,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    data, code = HOSTILE[name]
    raw = Raw(served.path)
    raw.send(data)
    assert raw.goaway_code() == code
    assert raw.closed()
    raw.close()
    # nothing of ours failed (no internal-error log) and the server still serves
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert served.method("Echo")(b"still here", timeout=5) == b"still here"


def test_bad_preface_gets_goaway(served: Running) -> None:
    raw = Raw(served.path, preface=False)
    raw.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert raw.goaway_code() == f.PROTOCOL_ERROR
    assert raw.closed()
    raw.close()


def test_first_frame_must_be_settings(served: Running) -> None:
    raw = Raw(served.path, preface=False)
    raw.send(f.CLIENT_PREFACE + f.frame(f.PING, 0, 0, b"12345678"))
    assert raw.goaway_code() == f.PROTOCOL_ERROR
    raw.close()


def test_stream_errors_reset_only_that_stream(served: Running) -> None:
    raw = Raw(served.path)
    raw.send(f.frame(f.HEADERS, f.FLAG_END_HEADERS, 1, _headers_block(b"/t.T/Slow")))
    raw.send(f.window_update(1, 0))  # stream error: PROTOCOL_ERROR on stream 1 only
    while True:
        fr = raw.frame()
        assert fr is not None
        if fr[0] == f.RST_STREAM:
            assert fr[2] == 1 and struct.unpack(">I", fr[3])[0] == f.PROTOCOL_ERROR
            break
    raw.request(3, "Echo", b"after")
    data, trailers, _ = response(raw, 3)
    assert data.endswith(b"after") and trailers[b"grpc-status"] == b"0"
    raw.close()


def test_random_garbage_never_hangs_or_breaks_the_server(served: Running, caplog: pytest.LogCaptureFixture) -> None:
    rng = random.Random(1234)
    valid = [f.frame(f.PING, 0, 0, b"12345678"), f.settings({f.SETTINGS_MAX_FRAME_SIZE: 20000}),
             f.frame(f.HEADERS, f.FLAG_END_HEADERS, 1, _headers_block()), f.window_update(0, 10)]
    for _ in range(slow_budget(40)):
        raw = Raw(served.path)
        blob = b"".join(rng.choice(valid) for _ in range(rng.randrange(3)))
        blob += bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200)))
        raw.sock.settimeout(0.3)
        try:
            raw.send(blob)
            raw.closed()
        except (BrokenPipeError, ConnectionResetError):
            pass
        raw.close()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert served.method("Echo")(b"alive", timeout=5) == b"alive"


# ---------------------------------------------------------------- flow control
def test_send_respects_small_windows_and_resumes(served: Running) -> None:
    raw = Raw(served.path, settings={f.SETTINGS_INITIAL_WINDOW_SIZE: 1000})
    raw.request(1, "Big", b"100000")
    received = 0
    raw.sock.settimeout(0.5)
    while True:  # until the server stops: it may send only 1000 bytes
        fr = raw.frame()
        if fr is None:
            break
        if fr[0] == f.DATA:
            received += len(fr[3])
    assert received == 1000
    raw.sock.settimeout(5)
    # more stream window via SETTINGS (applies to open streams), connection via WINDOW_UPDATE
    raw.send(f.settings({f.SETTINGS_INITIAL_WINDOW_SIZE: 60000}))
    raw.send(f.window_update(0, 200000))
    raw.send(f.window_update(1, 100000))
    data, trailers, sizes = response(raw, 1)
    assert received + len(data) == 100005
    assert trailers[b"grpc-status"] == b"0"
    assert max(sizes) <= f.DEFAULT_MAX_FRAME_SIZE
    raw.close()


def test_large_response_follows_peer_frame_size(served: Running) -> None:
    raw = Raw(served.path, settings={f.SETTINGS_MAX_FRAME_SIZE: 1 << 20, f.SETTINGS_INITIAL_WINDOW_SIZE: 1 << 30})
    raw.send(f.window_update(0, 1 << 30))
    raw.request(1, "Big", b"3000000")
    data, trailers, sizes = response(raw, 1)
    assert len(data) == 3000005 and max(sizes) == 1 << 20
    raw.close()


def test_default_windows_with_window_updates(served: Running) -> None:
    raw = Raw(served.path)
    raw.request(1, "Big", b"1000000")
    data, trailers, sizes = response(raw, 1, auto_window=True)
    assert len(data) == 1000005 and trailers[b"grpc-status"] == b"0"
    raw.close()


def test_client_may_push_beyond_the_initial_window(served: Running) -> None:
    """40 MiB on one stream, never waiting: our WINDOW_UPDATEs keep the client within its windows."""
    raw = Raw(served.path)
    raw.send(f.frame(f.HEADERS, f.FLAG_END_HEADERS, 1, _headers_block(b"/t.T/Total")))
    payload = 16384 - 5
    frames = 2600
    one = f.frame(f.DATA, 0, 1, b"\x00" + struct.pack(">I", payload) + b"p" * payload)
    for _ in range(frames // 100):
        raw.send(one * 100)
    raw.send(f.frame(f.DATA, f.FLAG_END_STREAM, 1, b""))
    updates = {0: 0, 1: 0}
    decoder = hpack.Decoder()
    data = b""
    while True:
        fr = raw.frame()
        assert fr is not None, "connection ended early"
        ftype, flags, sid, body = fr
        if ftype == f.WINDOW_UPDATE:
            updates[sid] += struct.unpack(">I", body)[0]
        elif ftype == f.DATA and sid == 1:
            data += body
        elif ftype == f.GOAWAY or ftype == f.RST_STREAM:
            raise AssertionError(f"unexpected frame {ftype}")
        elif ftype == f.HEADERS and flags & f.FLAG_END_STREAM:
            trailers = dict(decoder.decode(body))
            break
        elif ftype == f.HEADERS:
            decoder.decode(body)
    assert trailers[b"grpc-status"] == b"0"
    assert data[5:] == str(frames * payload).encode()
    # 42.6 MB sent against a 16 MiB stream window and 64 MiB connection window
    assert updates[1] > 0 and updates[0] > 0


def test_data_beyond_our_windows_is_a_flow_control_error(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # with our real 16 MiB windows a 16 KiB frame can never overrun them (they are
    # topped up at half), so shrink them to where one frame can
    from boltimages.server.h2 import connection
    monkeypatch.setattr(connection, "LOCAL_INITIAL_WINDOW", 10000)
    running = Running(str(tmp_path))
    try:
        raw = Raw(running.path)
        raw.send(f.frame(f.HEADERS, f.FLAG_END_HEADERS, 1, _headers_block(b"/t.T/Size")))
        raw.send(f.frame(f.DATA, 0, 1, b"\x00" * 10001))  # stream window: 10000
        while True:
            fr = raw.frame()
            assert fr is not None, "no RST_STREAM"
            if fr[0] == f.RST_STREAM:
                assert fr[2] == 1 and struct.unpack(">I", fr[3])[0] == f.FLOW_CONTROL_ERROR
                break
        raw.close()
        # the connection window: with no grant beyond the initial 65,535 and frames
        # allowed to be that big, one frame of 65,536 overruns it
        monkeypatch.setattr(connection, "LOCAL_CONNECTION_WINDOW", f.DEFAULT_INITIAL_WINDOW_SIZE)
        monkeypatch.setattr(connection, "LOCAL_INITIAL_WINDOW", 1 << 20)
        monkeypatch.setattr(f, "DEFAULT_MAX_FRAME_SIZE", 1 << 17)
        raw = Raw(running.path)
        raw.send(f.frame(f.HEADERS, f.FLAG_END_HEADERS, 1, _headers_block(b"/t.T/Size"))
                 + f.frame(f.DATA, 0, 1, b"\x00" * (f.DEFAULT_INITIAL_WINDOW_SIZE + 1)))
        assert raw.goaway_code() == f.FLOW_CONTROL_ERROR
        raw.close()
    finally:
        running.stop()


# ---------------------------------------------------------------- gRPC semantics via grpcio
def test_twelve_mib_response_and_request(served: Running) -> None:
    body = served.method("Big")(str(12 * MiB).encode(), timeout=30)
    assert len(body) == 12 * MiB
    assert served.method("Size")(b"x" * (12 * MiB), timeout=30) == str(12 * MiB).encode()


def test_oversized_messages_are_resource_exhausted(tmp_path: Any) -> None:
    running = Running(str(tmp_path), max_recv=1 * MiB)
    try:
        with pytest.raises(grpc.RpcError) as err:
            running.method("Size")(b"x" * (2 * MiB), timeout=10)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "larger than max" in err.value.details()
        with pytest.raises(grpc.RpcError) as err:
            running.method("Big")(str(17 * MiB).encode(), timeout=10)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    finally:
        running.stop()


def test_compressed_message_is_unimplemented(served: Running) -> None:
    raw = Raw(served.path)
    raw.request(1, "Echo", b"zz", flag=1)
    data, trailers, _ = response(raw, 1)
    assert data == b"" and trailers[b"grpc-status"] == str(grpc.StatusCode.UNIMPLEMENTED.value[0]).encode()
    raw.close()


def test_unknown_method_is_unimplemented(served: Running) -> None:
    with pytest.raises(grpc.RpcError) as err:
        served.channel.unary_unary("/no.Such/Method")(b"", timeout=5)
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert err.value.details() == "Method not found!"


def test_handler_exception_is_unknown_like_grpcio(served: Running) -> None:
    with pytest.raises(grpc.RpcError) as err:
        served.method("Boom")(b"", timeout=5)
    assert err.value.code() == grpc.StatusCode.UNKNOWN
    assert err.value.details() == "Exception calling application: boom"


@pytest.mark.parametrize("details", ["plain", "100% sure", "näme: 名前\nnewline", "x" * 5000])
def test_abort_details_survive_percent_encoding(served: Running, details: str) -> None:
    with pytest.raises(grpc.RpcError) as err:
        served.method("Abort")(details.encode(), timeout=5)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert err.value.details() == details


def test_trailers_larger_than_a_frame_use_continuation(served: Running) -> None:
    details = "ü" * 4000  # 24,000 bytes once percent-encoded: more than one 16 KiB frame
    raw = Raw(served.path)
    raw.request(1, "Abort", details.encode())
    data, trailers, _ = response(raw, 1)
    assert trailers[b"grpc-status"] == b"5" and percent_decode(trailers[b"grpc-message"]) == details
    raw.close()


def test_abort_with_status_carries_trailing_metadata(served: Running) -> None:
    with pytest.raises(grpc.RpcError) as err:
        served.method("WithStatus")(b"", timeout=5)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION and err.value.details() == "precondition"
    trailing = dict(err.value.trailing_metadata())
    assert trailing["why-bin"] == b"\x00\x01" and trailing["who"] == "test"


@pytest.mark.parametrize("inline", [False, True])
def test_metadata_both_ways_and_set_code(tmp_path: Any, inline: bool) -> None:
    running = Running(str(tmp_path))
    if inline:
        running.server.inline_methods = frozenset([f"/{SERVICE}/Meta"])
    try:
        reply, call = running.method("Meta").with_call(b"", timeout=30, metadata=(("x-echo", "hi"),))
        assert reply == b"meta"
        assert dict(call.initial_metadata())["initial"] == "hi"
        assert dict(call.trailing_metadata())["trailing"] == "t"
        with pytest.raises(grpc.RpcError) as err:
            running.method("Meta")(b"code", timeout=30)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND and err.value.details() == "set, not raised"
    finally:
        running.stop()


def test_percent_decode_tolerates_bad_escapes() -> None:
    assert percent_decode(b"a%zz%4") == "a%zz%4"
    assert percent_decode(b"%41%c3%a9") == "Aé"


def test_deadline_exceeded_runs_callbacks(served: Running) -> None:
    with pytest.raises(grpc.RpcError) as err:
        served.method("Slow")(b"1.5", timeout=0.2)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert served.probe.callback_ran.wait(5)


def test_cancel_mid_stream_stops_the_producer(served: Running) -> None:
    call = served.method("Forever", "unary_stream")(b"")
    got = [next(call) for _ in range(3)]
    assert got == [b"0", b"1", b"2"]
    call.cancel()
    assert served.probe.callback_ran.wait(5), "termination callback did not run"
    assert served.probe.stream_ended.wait(5), "the handler's generator kept running"


def test_streamed_response_under_backpressure(served: Running) -> None:
    count, size = 200, 64 * 1024  # 12.5 MiB through 64 KiB windows of a grpcio client
    got = list(served.method("Chunks", "unary_stream")(f"{count},{size}".encode(), timeout=60))
    assert len(got) == count and all(g == bytes([i % 256]) * size for i, g in enumerate(got))


def test_client_and_bidi_streaming(served: Running) -> None:
    assert served.method("Total", "stream_unary")(iter([b"ab", b"cde", b""]), timeout=5) == b"5"
    assert list(served.method("Bidi", "stream_stream")(iter([b"a", b"bc"]), timeout=5)) == [b"A", b"BC"]


def test_sixteen_pooled_calls_on_one_connection_run_concurrently(served: Running) -> None:
    together = served.method("Together")
    with futures.ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda _: together(b"", timeout=20), range(16)))
    assert results == [b"ok"] * 16


def test_graceful_stop_lets_a_running_call_finish(tmp_path: Any) -> None:
    running = Running(str(tmp_path))
    future = running.method("Slow").future(b"0.5", timeout=10)
    assert running.probe.slow_started.wait(10), "the call never reached its handler"
    done = running.server.stop(5.0)
    assert future.result(timeout=10) == b"slow"
    assert done.wait(10)
    with pytest.raises(OSError):
        Raw(running.path).send(b"x" * 100)
    running.channel.close()
    running.executor.shutdown(wait=True)


def test_stop_after_grace_ends_streams(tmp_path: Any) -> None:
    running = Running(str(tmp_path))
    call = running.method("Forever", "unary_stream")(b"")
    next(call)
    started = time.monotonic()
    assert running.server.stop(0.3).wait(10)
    assert time.monotonic() - started < 5
    with pytest.raises(grpc.RpcError):
        for _ in call:
            pass
    assert running.probe.stream_ended.wait(5)
    running.channel.close()
    running.executor.shutdown(wait=True)


def _registered(raw: Raw) -> None:
    """Frames are handled in order: once our PING is answered, the requests sent before it are open streams."""
    raw.send(f.frame(f.PING, 0, 0, b"in-order"))
    while True:
        fr = raw.frame()
        assert fr is not None, "no PING ack"
        if fr[0] == f.PING and fr[1] & f.FLAG_ACK:
            return


def _late_frames_then_eof(raw: Raw) -> None:
    """The client still writes after the server's last frame, as grpc-core does (WINDOW_UPDATE, PING).

    The server must have half-closed, not closed: a closed socket answers
    these writes with EPIPE, and grpc-core then fails every call on the
    connection as UNAVAILABLE, even those whose trailers it had not read yet.
    """
    # wait for the server's end of stream (a peek, so nothing is consumed):
    # from then on a server that closed rather than half-closed refuses the
    # writes below with EPIPE, so they test the half-close without a race
    assert raw.buf == b"" and raw.sock.recv(1, socket.MSG_PEEK) == b"", \
        "the server answered after its last frame"
    raw.send(f.window_update(0, 1000) + f.frame(f.PING, 0, 0, b"late-one"))
    rest = b""
    while True:
        chunk = raw.sock.recv(65536)  # EOF, not a reset
        if not chunk:
            break
        rest += chunk
    assert rest == b"", "the server answered after its last frame"


def test_graceful_stop_half_closes_after_the_last_stream(tmp_path: Any) -> None:
    running = Running(str(tmp_path))
    raw = Raw(running.path)
    raw.request(1, "Slow", b"0.3")
    _registered(raw)
    done = running.server.stop(5.0)
    data, trailers, _ = response(raw, 1)
    assert data == b"\x00\x00\x00\x00\x04slow" and trailers[b"grpc-status"] == b"0"
    _late_frames_then_eof(raw)
    raw.close()
    assert done.wait(10)
    running.channel.close()
    running.executor.shutdown(wait=True)


def test_stop_after_grace_half_closes_after_the_cancellations(tmp_path: Any) -> None:
    running = Running(str(tmp_path))
    raw = Raw(running.path)
    raw.request(1, "Forever", b"")
    _registered(raw)
    done = running.server.stop(0.3)
    code = None
    while code is None:
        fr = raw.frame()
        assert fr is not None, "connection ended before the stream was cancelled"
        if fr[0] == f.RST_STREAM and fr[2] == 1:  # its tiny messages fit the default window
            code = struct.unpack(">I", fr[3])[0]
    assert code == f.CANCEL
    _late_frames_then_eof(raw)
    raw.close()
    assert done.wait(10)
    assert running.probe.stream_ended.wait(5)
    running.channel.close()
    running.executor.shutdown(wait=True)


@pytest.mark.slow
def test_soak_mixed_calls_cancels_and_deadlines(served: Running) -> None:
    """Many clients at once mixing every call shape with cancels and deadlines: all end, none hangs."""
    rounds = slow_budget(30)
    channels = [grpc.insecure_channel("unix://" + served.path) for _ in range(4)]
    rng = random.Random(99)

    def one(i: int) -> str:
        ch = channels[i % len(channels)]
        kind = rng.randrange(6)
        try:
            if kind == 0:
                assert ch.unary_unary(f"/{SERVICE}/Echo")(b"e%d" % i, timeout=10) == b"e%d" % i
            elif kind == 1:
                ch.unary_unary(f"/{SERVICE}/Slow")(b"0.3", timeout=0.05)
            elif kind == 2:
                call = ch.unary_stream(f"/{SERVICE}/Forever")(b"", timeout=10)
                next(call)
                call.cancel()
            elif kind == 3:
                got = list(ch.unary_stream(f"/{SERVICE}/Chunks")(b"20,70000", timeout=20))
                assert len(got) == 20
            elif kind == 4:
                assert list(ch.stream_stream(f"/{SERVICE}/Bidi")(iter([b"x"] * 5), timeout=10)) == [b"X"] * 5
            else:
                assert len(ch.unary_unary(f"/{SERVICE}/Big")(b"300000", timeout=10)) == 300000
        except grpc.RpcError as exc:
            assert exc.code() in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED), exc
        return "done"

    with futures.ThreadPoolExecutor(12) as pool:
        results = list(pool.map(one, range(rounds * 12), timeout=300))
    assert results == ["done"] * (rounds * 12)
    for ch in channels:
        ch.close()
    assert served.method("Echo")(b"end", timeout=5) == b"end"
