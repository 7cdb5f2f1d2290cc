"""Codecs against byte strings read off a meta.db written by containerd 1.6.20.

The constants below were taken from a file that containerd 1.6.20 wrote
after Images.Create calls made through our generated stubs (dumped with the
Go bbolt oracle); test_containerd_bytes.py repeats that check live.
"""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from boltimages.store import codec
from boltimages.store.codec import CodecError, Timestamp

# v1/default/images/docker.io/library/x:1/createdat as containerd 1.6.20 wrote it
CONTAINERD_CREATEDAT = bytes.fromhex("010000000ee29a46781526ab71ffff")
# v1/.../target/size for size 123, and v1/version for db version 3
CONTAINERD_SIZE_123 = bytes.fromhex("f601")
CONTAINERD_VERSION_3 = bytes.fromhex("06")


def test_containerd_varints() -> None:
    assert codec.encode_varint(123) == CONTAINERD_SIZE_123
    assert codec.encode_varint(3) == CONTAINERD_VERSION_3
    assert codec.decode_varint_exact(CONTAINERD_SIZE_123) == 123
    assert codec.decode_varint_exact(CONTAINERD_VERSION_3) == 3


@pytest.mark.parametrize("value,encoded", [
    (0, "00"), (-1, "01"), (1, "02"), (-2, "03"), (63, "7e"), (-64, "7f"), (64, "8001"),
    (2**63 - 1, "feffffffffffffffff01"), (-(2**63), "ffffffffffffffffff01"),
])
def test_zigzag_vectors(value: int, encoded: str) -> None:
    assert codec.encode_varint(value).hex() == encoded
    assert codec.decode_varint_exact(bytes.fromhex(encoded)) == value


@given(st.integers(min_value=-(2**63), max_value=2**63 - 1))
def test_varint_round_trip(value: int) -> None:
    data = codec.encode_varint(value)
    assert len(data) <= codec.MAX_VARINT_LEN
    assert codec.decode_varint(data + b"\x00junk") == (value, len(data))


def test_varint_errors() -> None:
    with pytest.raises(CodecError, match="truncated"):
        codec.decode_varint(b"\x80")
    with pytest.raises(CodecError, match="overflows"):
        codec.decode_varint(b"\xff" * 10 + b"\x01")
    with pytest.raises(CodecError, match="overflows"):
        codec.decode_uvarint(b"\xff" * 9 + b"\x02")
    with pytest.raises(CodecError, match="trailing"):
        codec.decode_varint_exact(b"\x02\x00")
    with pytest.raises(CodecError):
        codec.encode_varint(2**63)
    # containerd ignores varint errors when reading sizes: the value is 0
    assert codec.decode_varint_lenient(b"\x80") == 0


def test_containerd_time() -> None:
    ts = codec.decode_time(CONTAINERD_CREATEDAT)
    assert ts.offset is None  # UTC marker -1
    assert (ts.seconds, ts.nanos) == (0x0EE29A4678 - codec.UNIX_TO_GO_INTERNAL, 0x1526AB71)
    assert str(ts) == "2026-11-26T15:25:44.354855793Z"  # Go: t.Format(RFC3339Nano)
    assert codec.encode_time(ts) == CONTAINERD_CREATEDAT


def test_time_epochs_and_zones() -> None:
    # Unix epoch: Go seconds since year 1 = 62135596800 = 0x0e7791f700
    assert codec.encode_time(Timestamp(0, 0)).hex() == "010000000e7791f70000000000ffff"
    # whole-minute offset: version 1, offset in minutes (+120 = 0x0078)
    assert codec.encode_time(Timestamp(0, 5, 7200)).hex() == "010000000e7791f700000000050078"
    # offset with seconds: version 2 and the extra byte
    encoded = codec.encode_time(Timestamp(0, 0, 3600 + 30))
    assert encoded.hex() == "020000000e7791f70000000000003c1e"
    assert codec.decode_time(encoded) == Timestamp(0, 0, 3630)
    # Go writes int8(-30) but reads the byte back unsigned (offset +226 s);
    # confirmed with go1.19's time package, mirrored so both sides agree
    assert codec.encode_time(Timestamp(0, 0, -30)).hex() == "020000000e7791f700000000000000e2"
    assert codec.decode_time(bytes.fromhex("020000000e7791f700000000000000e2")).offset == 226
    with pytest.raises(CodecError, match="unexpected zone offset"):
        codec.encode_time(Timestamp(0, 0, -60))  # -1 minute collides with the UTC marker


@given(st.integers(min_value=-62135596800, max_value=253402300799),
       st.integers(min_value=0, max_value=999_999_999),
       st.one_of(st.none(), st.integers(min_value=0, max_value=14 * 3600)))
def test_time_round_trip(seconds: int, nanos: int, offset) -> None:
    ts = Timestamp(seconds, nanos, offset)
    data = codec.encode_time(ts)
    assert len(data) in (15, 16)
    back = codec.decode_time(data)
    assert back == ts and back.to_unix_nanos() == seconds * 10**9 + nanos


@pytest.mark.parametrize("data,message", [
    (b"", "no data"), (b"\x03" + bytes(14), "unsupported version"),
    (b"\x01" + bytes(13), "invalid length"), (b"\x02" + bytes(14), "invalid length"),
])
def test_time_errors(data: bytes, message: str) -> None:
    with pytest.raises(CodecError, match=message):
        codec.decode_time(data)


def test_timestamp_proto_and_order() -> None:
    from google.protobuf.timestamp_pb2 import Timestamp as PbTimestamp
    pb = PbTimestamp(seconds=1700000000, nanos=123)
    ts = Timestamp.from_proto(pb)
    out = PbTimestamp()
    ts.to_proto(out)
    assert out == pb
    assert Timestamp(1, 0) < Timestamp(1, 1) < Timestamp(2, 0)
    assert Timestamp.now() > ts
