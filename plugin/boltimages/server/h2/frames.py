"""HTTP/2 frame layout (RFC 9113 section 4 and 6): constants and builders.

Every number the wire format fixes is named here once; the connection state
machine (connection.py) only speaks in these names.
"""

from __future__ import annotations

import struct

#: what a client sends before its first frame (RFC 9113 section 3.4)
CLIENT_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

#: every frame starts with a 9-byte header: 24-bit length, type, flags, 31-bit stream id
FRAME_HEADER_LEN = 9
STREAM_ID_MASK = 0x7FFFFFFF

# frame types
DATA = 0x0
HEADERS = 0x1
PRIORITY = 0x2
RST_STREAM = 0x3
SETTINGS = 0x4
PUSH_PROMISE = 0x5
PING = 0x6
GOAWAY = 0x7
WINDOW_UPDATE = 0x8
CONTINUATION = 0x9

# flags (meaning depends on the frame type; the values never clash where used)
FLAG_END_STREAM = 0x1
FLAG_ACK = 0x1
FLAG_END_HEADERS = 0x4
FLAG_PADDED = 0x8
FLAG_PRIORITY = 0x20

# fixed payload sizes
PRIORITY_LEN = 5          # stream dependency (4) + weight (1)
RST_STREAM_LEN = 4
PING_LEN = 8
WINDOW_UPDATE_LEN = 4
SETTING_LEN = 6           # identifier (2) + value (4)
GOAWAY_MIN_LEN = 8        # last stream id (4) + error code (4), then debug data

# settings identifiers
SETTINGS_HEADER_TABLE_SIZE = 0x1
SETTINGS_ENABLE_PUSH = 0x2
SETTINGS_MAX_CONCURRENT_STREAMS = 0x3
SETTINGS_INITIAL_WINDOW_SIZE = 0x4
SETTINGS_MAX_FRAME_SIZE = 0x5
SETTINGS_MAX_HEADER_LIST_SIZE = 0x6

# protocol defaults and bounds
DEFAULT_HEADER_TABLE_SIZE = 4096
DEFAULT_INITIAL_WINDOW_SIZE = 65535
DEFAULT_MAX_FRAME_SIZE = 16384
MAX_MAX_FRAME_SIZE = (1 << 24) - 1
MAX_WINDOW_SIZE = (1 << 31) - 1

# error codes (RFC 9113 section 7)
NO_ERROR = 0x0
PROTOCOL_ERROR = 0x1
INTERNAL_ERROR = 0x2
FLOW_CONTROL_ERROR = 0x3
SETTINGS_TIMEOUT = 0x4
STREAM_CLOSED = 0x5
FRAME_SIZE_ERROR = 0x6
REFUSED_STREAM = 0x7
CANCEL = 0x8
COMPRESSION_ERROR = 0x9
CONNECT_ERROR = 0xA
ENHANCE_YOUR_CALM = 0xB
INADEQUATE_SECURITY = 0xC
HTTP_1_1_REQUIRED = 0xD

_HEADER = struct.Struct(">I B I")  # length and type packed in the first word, then flags, stream
_U32 = struct.Struct(">I")
_U32_PAIR = struct.Struct(">II")
_SETTING = struct.Struct(">HI")


class H2ConnectionError(Exception):
    """The peer broke the protocol: the whole connection ends with GOAWAY(code)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class StreamError(Exception):
    """The peer broke the protocol on one stream: RST_STREAM(code), the connection lives on."""

    def __init__(self, stream_id: int, code: int, message: str) -> None:
        super().__init__(message)
        self.stream_id = stream_id
        self.code = code


def parse_header(buf: bytes | bytearray | memoryview, offset: int = 0) -> tuple[int, int, int, int]:
    """(length, type, flags, stream id) of the frame header at ``offset``; caller checks 9 bytes exist."""
    word, flags, stream = _HEADER.unpack_from(buf, offset)
    return word >> 8, word & 0xFF, flags, stream & STREAM_ID_MASK


def frame(ftype: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    """One whole frame; the caller keeps ``payload`` within the peer's max frame size."""
    return _HEADER.pack((len(payload) << 8) | ftype, flags, stream_id) + payload


def frame_header(length: int, ftype: int, flags: int, stream_id: int) -> bytes:
    """Only the 9-byte header, for writing a large payload without copying it."""
    return _HEADER.pack((length << 8) | ftype, flags, stream_id)


def settings(values: dict[int, int]) -> bytes:
    return frame(SETTINGS, 0, 0, b"".join(_SETTING.pack(k, v) for k, v in values.items()))


SETTINGS_ACK = frame(SETTINGS, FLAG_ACK, 0)


def parse_settings(payload: bytes) -> list[tuple[int, int]]:
    if len(payload) % SETTING_LEN:
        raise H2ConnectionError(FRAME_SIZE_ERROR, f"SETTINGS payload of {len(payload)} bytes is not a multiple of 6")
    return [_SETTING.unpack_from(payload, i) for i in range(0, len(payload), SETTING_LEN)]


def ping_ack(payload: bytes) -> bytes:
    return frame(PING, FLAG_ACK, 0, payload)


def window_update(stream_id: int, increment: int) -> bytes:
    return frame(WINDOW_UPDATE, 0, stream_id, _U32.pack(increment))


def rst_stream(stream_id: int, code: int) -> bytes:
    return frame(RST_STREAM, 0, stream_id, _U32.pack(code))


def goaway(last_stream_id: int, code: int, debug: bytes = b"") -> bytes:
    return frame(GOAWAY, 0, 0, _U32_PAIR.pack(last_stream_id, code) + debug)


def read_u32(payload: bytes, offset: int = 0) -> int:
    return _U32.unpack_from(payload, offset)[0]


def strip_padding(payload: bytes, flags: int, ftype_name: str) -> bytes:
    """Payload without the pad-length byte and padding (RFC 9113 6.1/6.2)."""
    if not flags & FLAG_PADDED:
        return payload
    if not payload:
        raise H2ConnectionError(FRAME_SIZE_ERROR, f"padded {ftype_name} frame has no pad length")
    pad = payload[0]
    if pad >= len(payload):
        raise H2ConnectionError(PROTOCOL_ERROR, f"{ftype_name} padding ({pad}) is not shorter than the payload")
    return payload[1:len(payload) - pad]
