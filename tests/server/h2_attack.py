"""A raw HTTP/2 client for attacking a gRPC server on a unix socket, frame by frame.

Frames are built with the server's own codec (server/h2/frames.py and
hpack.py): these attacks are about what the server does with well-formed
but hostile traffic, so sharing the encoder costs nothing in coverage, and
a second frame codec would be one more thing to keep right. Requests are
HPACK-encoded with incremental indexing, as real clients do, so the
server's dynamic table is exercised.
"""

from __future__ import annotations

import errno
import select
import socket
import struct
import time
from typing import Optional

from boltimages.server.h2 import frames as f
from boltimages.server.h2 import hpack


def grpc_message(body: bytes) -> bytes:
    return b"\x00" + struct.pack(">I", len(body)) + body


def literal_indexed(name: bytes, value: bytes, huffman: bool = False) -> bytes:
    """One field as 'literal with incremental indexing, new name' (RFC 7541 6.2.1)."""
    return b"\x40" + hpack.encode_string(name, huffman) + hpack.encode_string(value, huffman)


#: 64 characters whose Huffman code is exactly 45 bytes (360 bits, no padding),
#: so a long coded value is this repeated: encoding a megabyte bit by bit in
#: Python would take minutes
_HUFFMAN_TEXT = b"0123456789abcdef" * 4
_HUFFMAN_UNIT = hpack.huffman_encode(_HUFFMAN_TEXT)
assert len(_HUFFMAN_UNIT) * 8 == sum(hpack._HUFFMAN_LENGTHS[b] for b in _HUFFMAN_TEXT)


def huffman_field(name: bytes, encoded_size: int) -> bytes:
    """A header field (literal without indexing, new name) whose value is
    Huffman-coded and about ``encoded_size`` bytes long as sent."""
    coded = _HUFFMAN_UNIT * max(1, encoded_size // len(_HUFFMAN_UNIT))
    return b"\x00" + hpack.encode_string(name) + hpack.encode_integer(len(coded), 7, 0x80) + coded


def request_block(path: str, extra: tuple[tuple[bytes, bytes], ...] = (), namespace: str = "default") -> bytes:
    return hpack.encode_headers([(b":method", b"POST"), (b":scheme", b"http"), (b":path", path.encode()),
                                 (b":authority", b"localhost"), (b"content-type", b"application/grpc"),
                                 (b"te", b"trailers"), (b"containerd-namespace", namespace.encode()), *extra])


class Outcome:
    """What the server did to one attacking connection."""

    def __init__(self) -> None:
        self.goaway: Optional[int] = None
        self.resets: dict[int, int] = {}  # error code -> RST_STREAM count
        self.pings = 0
        self.settings_acks = 0
        self.headers = 0
        self.statuses: dict[str, int] = {}  # grpc-status value -> count, from trailers
        self.closed = False

    def describe(self) -> str:
        if self.goaway is not None:
            return f"GOAWAY {_CODE_NAMES.get(self.goaway, self.goaway)}"
        if self.resets:
            return ", ".join(f"{n} RST_STREAM {_CODE_NAMES.get(c, c)}" for c, n in sorted(self.resets.items()))
        return "closed" if self.closed else "open"


_CODE_NAMES = {code: name for name, code in (
    ("NO_ERROR", f.NO_ERROR), ("PROTOCOL_ERROR", f.PROTOCOL_ERROR), ("INTERNAL_ERROR", f.INTERNAL_ERROR),
    ("FLOW_CONTROL_ERROR", f.FLOW_CONTROL_ERROR), ("STREAM_CLOSED", f.STREAM_CLOSED),
    ("FRAME_SIZE_ERROR", f.FRAME_SIZE_ERROR), ("REFUSED_STREAM", f.REFUSED_STREAM), ("CANCEL", f.CANCEL),
    ("COMPRESSION_ERROR", f.COMPRESSION_ERROR), ("ENHANCE_YOUR_CALM", f.ENHANCE_YOUR_CALM))}


class Attacker:
    """One connection. Writes never block longer than ``send_timeout``; reads only when asked."""

    def __init__(self, path: str, settings: Optional[dict[int, int]] = None) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(5)
        self.sock.connect(path)
        self.sock.setblocking(False)
        self.inbuf = bytearray()
        self.decoder = hpack.Decoder()
        self.outcome = Outcome()
        self.sent = 0
        self.next_stream = 1
        self.send(f.CLIENT_PREFACE + f.settings(settings or {}))

    def stream_id(self) -> int:
        sid = self.next_stream
        self.next_stream += 2
        return sid

    def send(self, data: bytes, timeout: float = 5.0) -> bool:
        """Write all of ``data``; False when the server stopped taking it
        within ``timeout`` (it applies backpressure) or closed the connection."""
        view = memoryview(data)
        deadline = time.monotonic() + timeout
        while view:
            try:
                n = self.sock.send(view)
            except BlockingIOError:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                select.select([], [self.sock], [], min(left, 0.05))
                continue
            except (BrokenPipeError, ConnectionResetError):
                self.outcome.closed = True
                return False
            view = view[n:]
            self.sent += n
        return True

    def read(self, timeout: float = 0.0) -> bool:
        """Read what has arrived (waiting up to ``timeout`` for the first
        bytes) and account its frames; False at EOF."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                chunk = self.sock.recv(1 << 20)
            except BlockingIOError:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                select.select([self.sock], [], [], min(left, 0.05))
                continue
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                self.outcome.closed = True
                self._parse()
                return False
            self.inbuf += chunk
            deadline = 0.0  # got something: take the rest without waiting
        self._parse()
        return True

    def read_until_closed(self, timeout: float) -> Outcome:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.read(min(0.2, max(0.0, deadline - time.monotonic()))):
            pass
        return self.outcome

    def _parse(self) -> None:
        buf = self.inbuf
        pos = 0
        while len(buf) - pos >= f.FRAME_HEADER_LEN:
            length, ftype, flags, sid = f.parse_header(buf, pos)
            end = pos + f.FRAME_HEADER_LEN + length
            if end > len(buf):
                break
            payload = bytes(buf[pos + f.FRAME_HEADER_LEN:end])
            pos = end
            if ftype == f.GOAWAY:
                self.outcome.goaway = struct.unpack(">I", payload[4:8])[0]
            elif ftype == f.RST_STREAM:
                code = struct.unpack(">I", payload)[0]
                self.outcome.resets[code] = self.outcome.resets.get(code, 0) + 1
            elif ftype == f.PING and flags & f.FLAG_ACK:
                self.outcome.pings += 1
            elif ftype == f.SETTINGS and flags & f.FLAG_ACK:
                self.outcome.settings_acks += 1
            elif ftype == f.HEADERS:  # our server never splits response headers into CONTINUATIONs here
                self.outcome.headers += 1
                for name, value in self.decoder.decode(f.strip_padding(payload, flags, "HEADERS")):
                    if name == b"grpc-status":
                        status = value.decode()
                        self.outcome.statuses[status] = self.outcome.statuses.get(status, 0) + 1
        del buf[:pos]

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def is_refused(exc: OSError) -> bool:
    return exc.errno in (errno.ECONNREFUSED, errno.EAGAIN)
