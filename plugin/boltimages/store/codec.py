"""Value encodings containerd uses inside meta.db.

Two encodings matter:

* integers (sizes, the db version) are Go ``binary.PutVarint``: zig-zag
  mapping then base-128 little-endian groups, at most 10 bytes;
* times are Go ``time.Time.MarshalBinary``:
  version 1 (15 bytes) = 0x01, seconds since 0001-01-01 UTC (int64 BE),
  nanoseconds (int32 BE), zone offset in minutes (int16 BE, -1 means UTC);
  version 2 (16 bytes) adds one byte of offset seconds, written only when
  the offset is not a whole number of minutes.

The decoders are strict: a value that Go would reject (short, long, unknown
version) raises :class:`CodecError`, because silently guessing would hand a
client a wrong size or time.
"""

from __future__ import annotations

import struct
import time as _time
from dataclasses import dataclass
from typing import Optional

MAX_VARINT_LEN = 10
_INT64_MIN = -(1 << 63)
_INT64_MAX = (1 << 63) - 1
_UINT64_MAX = (1 << 64) - 1

#: seconds from 0001-01-01T00:00:00Z (Go's internal epoch) to the Unix epoch
UNIX_TO_GO_INTERNAL = 62135596800
_NANOS = 1_000_000_000

_TIME_V1 = 1
_TIME_V2 = 2
_TIME_V1_LEN = 15
_TIME_V2_LEN = 16
_UTC_OFFSET_MARK = -1


class CodecError(ValueError):
    """A stored value does not decode the way containerd would decode it."""


# --- varints -------------------------------------------------------------

def encode_uvarint(value: int) -> bytes:
    """Go ``binary.PutUvarint``."""
    if not 0 <= value <= _UINT64_MAX:
        raise CodecError(f"uvarint out of range: {value}")
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def decode_uvarint(data: bytes) -> tuple[int, int]:
    """Go ``binary.Uvarint``: (value, bytes consumed); raises on truncation/overflow."""
    value = 0
    shift = 0
    for i, byte in enumerate(data[:MAX_VARINT_LEN]):
        if byte < 0x80:
            if i == MAX_VARINT_LEN - 1 and byte > 1:
                raise CodecError("varint overflows 64 bits")
            return value | (byte << shift), i + 1
        value |= (byte & 0x7F) << shift
        shift += 7
    if len(data) >= MAX_VARINT_LEN:
        raise CodecError("varint overflows 64 bits")
    raise CodecError("truncated varint")


def encode_varint(value: int) -> bytes:
    """Go ``binary.PutVarint`` (zig-zag): 0→00, -1→01, 1→02, 123→f6 01."""
    if not _INT64_MIN <= value <= _INT64_MAX:
        raise CodecError(f"varint out of int64 range: {value}")
    zigzag = (value << 1) ^ (value >> 63)
    return encode_uvarint(zigzag & _UINT64_MAX)


def decode_varint(data: bytes) -> tuple[int, int]:
    """Go ``binary.Varint``: (value, bytes consumed)."""
    zigzag, used = decode_uvarint(data)
    value = zigzag >> 1
    if zigzag & 1:
        value = ~value
    return value, used


def decode_varint_exact(data: bytes) -> int:
    """A whole value that must be exactly one varint (how sizes are stored)."""
    value, used = decode_varint(data)
    if used != len(data):
        raise CodecError(f"{len(data) - used} trailing bytes after varint")
    return value


def decode_varint_lenient(data: bytes) -> int:
    """What containerd's readers do: ``v, _ := binary.Varint(b)``.

    containerd ignores the error, so a malformed size reads as 0 instead of
    failing the whole List; mirror that when reading records. Sizes below
    2**20 (one to three bytes) are decoded inline: this runs for every
    record a List frames in Python.
    """
    n = len(data)
    if n == 1 and data[0] < 0x80:
        z = data[0]
    elif n == 2 and data[0] >= 0x80 and data[1] < 0x80:
        z = (data[0] & 0x7F) | (data[1] << 7)
    elif n == 3 and data[0] >= 0x80 and data[1] >= 0x80 and data[2] < 0x80:
        z = (data[0] & 0x7F) | ((data[1] & 0x7F) << 7) | (data[2] << 14)
    else:
        try:
            return decode_varint(data)[0]
        except CodecError:
            return 0
    return -((z + 1) >> 1) if z & 1 else z >> 1


# --- times ---------------------------------------------------------------

@dataclass(frozen=True, order=False)
class Timestamp:
    """A point in time with nanosecond precision plus the zone offset Go keeps.

    ``offset`` is seconds east of UTC, or ``None`` for UTC (Go's -1 marker).
    Two timestamps compare by instant; the offset only matters for encoding.
    """

    seconds: int  # since the Unix epoch
    nanos: int = 0
    offset: Optional[int] = None

    def __post_init__(self) -> None:
        if not 0 <= self.nanos < _NANOS:
            raise CodecError(f"nanoseconds out of range: {self.nanos}")

    # construction
    @classmethod
    def now(cls) -> "Timestamp":
        ns = _time.time_ns()
        return cls(ns // _NANOS, ns % _NANOS)

    @classmethod
    def from_unix_nanos(cls, ns: int) -> "Timestamp":
        return cls(ns // _NANOS, ns % _NANOS)

    @classmethod
    def from_proto(cls, message: object) -> "Timestamp":
        """From a google.protobuf.Timestamp (anything with seconds/nanos)."""
        return cls(int(message.seconds), int(message.nanos))  # type: ignore[attr-defined]

    # conversion
    def to_unix_nanos(self) -> int:
        return self.seconds * _NANOS + self.nanos

    def utc(self) -> "Timestamp":
        return Timestamp(self.seconds, self.nanos)

    def to_proto(self, message: object) -> None:
        """Fill a google.protobuf.Timestamp in place."""
        message.seconds = self.seconds  # type: ignore[attr-defined]
        message.nanos = self.nanos  # type: ignore[attr-defined]

    # ordering by instant
    def _key(self) -> tuple[int, int]:
        return (self.seconds, self.nanos)

    def __lt__(self, other: "Timestamp") -> bool:
        return self._key() < other._key()

    def __le__(self, other: "Timestamp") -> bool:
        return self._key() <= other._key()

    def __gt__(self, other: "Timestamp") -> bool:
        return self._key() > other._key()

    def __ge__(self, other: "Timestamp") -> bool:
        return self._key() >= other._key()

    def __str__(self) -> str:
        base = _time.strftime("%Y-%m-%dT%H:%M:%S", _time.gmtime(self.seconds)) if in_year_range(self.seconds) \
            else f"@{self.seconds}"
        return f"{base}.{self.nanos:09d}Z"


#: Go's zero time.Time (0001-01-01T00:00:00Z): what containerd stores for a time an image
#: lacks (writeImage) and reports for a record without one (readContainer)
GO_ZERO_TIME = Timestamp(-UNIX_TO_GO_INTERNAL, 0)


#: 9999-12-31T23:59:59Z in Unix seconds: the last second RFC 3339 (and Go's MarshalJSON) can write
LAST_SECOND_OF_9999 = 253402300799


def in_year_range(seconds: int) -> bool:
    """Whether Unix ``seconds`` falls in years 1 to 9999 (what RFC 3339 text can hold)."""
    return -UNIX_TO_GO_INTERNAL <= seconds <= LAST_SECOND_OF_9999


def encode_time(ts: Timestamp) -> bytes:
    """Go ``time.Time.MarshalBinary``."""
    if ts.offset is None:
        version, offset_min, offset_sec = _TIME_V1, _UTC_OFFSET_MARK, 0
    else:
        # Go truncates toward zero for both parts
        offset_min = ts.offset // 60 if ts.offset >= 0 else -(-ts.offset // 60)
        offset_sec = ts.offset - offset_min * 60
        version = _TIME_V2 if offset_sec else _TIME_V1
        if offset_min < -32768 or offset_min == _UTC_OFFSET_MARK or offset_min > 32767:
            raise CodecError(f"unexpected zone offset {ts.offset}s")
    sec = ts.seconds + UNIX_TO_GO_INTERNAL
    if not _INT64_MIN <= sec <= _INT64_MAX:
        raise CodecError(f"time out of range: {ts.seconds}s")
    out = struct.pack(">BqiH", version, sec, ts.nanos, offset_min & 0xFFFF)
    if version == _TIME_V2:
        out += bytes([offset_sec & 0xFF])
    return out


_TIME_V1_FORM = struct.Struct(">xqih")  # the 15-byte form containerd writes
_TIME_BODY = struct.Struct(">qi")


def is_plain_time(data: Optional[bytes]) -> bool:
    """Whether a stored time is in the 15-byte form containerd writes with
    its nanoseconds in range: the form that decodes and re-encodes to itself."""
    return data is not None and len(data) == _TIME_V1_LEN and data[0] == _TIME_V1 and \
        0 <= _TIME_BODY.unpack_from(data, 1)[1] < _NANOS


def time_seconds_nanos(data: bytes) -> tuple[int, int]:
    """(Unix seconds, nanoseconds) of a stored time; :func:`decode_time`
    without building a Timestamp for the common 15-byte form (the server
    frames two per record)."""
    if len(data) == _TIME_V1_LEN and data[0] == _TIME_V1:
        sec, nanos = _TIME_BODY.unpack_from(data, 1)
        if 0 <= nanos < _NANOS:
            return sec - UNIX_TO_GO_INTERNAL, nanos
    ts = decode_time(data)
    return ts.seconds, ts.nanos


def decode_time(data: bytes) -> Timestamp:
    """Go ``time.Time.UnmarshalBinary`` (errors where Go errors)."""
    if len(data) == _TIME_V1_LEN and data[0] == _TIME_V1:
        sec, nanos, offset_min = _TIME_V1_FORM.unpack(data)
        if 0 <= nanos < _NANOS:  # the common form, without the general checks
            return Timestamp(sec - UNIX_TO_GO_INTERNAL, nanos, None if offset_min == -1 else offset_min * 60)
    if not data:
        raise CodecError("Time.UnmarshalBinary: no data")
    version = data[0]
    if version not in (_TIME_V1, _TIME_V2):
        raise CodecError("Time.UnmarshalBinary: unsupported version")
    want = _TIME_V1_LEN if version == _TIME_V1 else _TIME_V2_LEN
    if len(data) != want:
        raise CodecError("Time.UnmarshalBinary: invalid length")
    sec, nanos, offset_min = struct.unpack(">qih", data[1:_TIME_V1_LEN])
    if not 0 <= nanos < _NANOS:
        # Go accepts it and normalises; containerd never writes it
        extra, nanos = divmod(nanos, _NANOS)
        sec += extra
    total = offset_min * 60
    if version == _TIME_V2:
        # Go reads this byte unsigned although it writes int8(offset % 60);
        # decode it the way Go does so we agree on every file
        total += data[15]
    offset: Optional[int] = None if total == _UTC_OFFSET_MARK * 60 else total
    return Timestamp(sec - UNIX_TO_GO_INTERNAL, nanos, offset)
