"""gRPC-over-HTTP/2 details of server/h2/grpc_call.py: timeouts, message framing, status encoding."""

from __future__ import annotations

import base64

import grpc
import pytest

from boltimages.server.h2 import grpc_call as gc
from boltimages.server.h2 import hpack


@pytest.mark.parametrize("raw,seconds", [(b"1H", 3600.0), (b"2M", 120.0), (b"3S", 3.0), (b"250m", 0.25),
                                         (b"1500u", 0.0015), (b"99999999n", 0.099999999)])
def test_timeout_units(raw: bytes, seconds: float) -> None:
    assert gc.parse_timeout(raw) == pytest.approx(seconds)


@pytest.mark.parametrize("raw", [b"", b"S", b"10", b"123456789S", b"-1S", b"1.5S", b"10x", b"1 S"])
def test_malformed_timeouts(raw: bytes) -> None:
    with pytest.raises(ValueError):
        gc.parse_timeout(raw)


def test_percent_encoding_round_trip() -> None:
    text = "image \"a:b\" not found: 100% — ünïcode\r\n"
    encoded = gc.percent_encode(text)
    assert all(0x20 <= b <= 0x7E for b in encoded)
    assert b"%25" in encoded and b"%0D%0A" in encoded
    assert gc.percent_decode(encoded) == text
    assert gc.percent_encode("plain ascii") == b"plain ascii"


def test_message_reader_splits_and_joins() -> None:
    reader = gc.MessageReader(1 << 20)
    wire = b"\x00\x00\x00\x00\x03abc" + b"\x00\x00\x00\x00\x00" + b"\x00\x00\x00\x00\x02de"
    got = []
    for i in range(len(wire)):  # one byte at a time: messages span DATA frames
        got += reader.feed(wire[i:i + 1])
    assert got == [b"abc", b"", b"de"] and not reader.partial


@pytest.mark.parametrize("wire,code", [
    (b"\x01\x00\x00\x00\x01x", grpc.StatusCode.UNIMPLEMENTED),        # compressed, no grpc-encoding
    (b"\x07\x00\x00\x00\x01x", grpc.StatusCode.INTERNAL),             # undefined flag
    (b"\x00\x00\x10\x00\x01", grpc.StatusCode.RESOURCE_EXHAUSTED),    # 1 MiB + 1 declared
])
def test_message_reader_refuses(wire: bytes, code: grpc.StatusCode) -> None:
    with pytest.raises(gc.RpcFailure) as err:
        gc.MessageReader(1 << 20).feed(wire)
    assert err.value.code is code


def test_status_fields_and_metadata() -> None:
    block = gc.status_fields(grpc.StatusCode.NOT_FOUND, "nö", [("x-id", "7"), ("blob-bin", b"\x00\xff")])
    fields = dict(hpack.Decoder().decode(block))
    assert fields[b"grpc-status"] == b"5"
    assert fields[b"grpc-message"] == b"n%C3%B6"
    assert fields[b"x-id"] == b"7"
    assert base64.b64decode(fields[b"blob-bin"] + b"==") == b"\x00\xff"
    assert dict(hpack.Decoder().decode(gc.status_fields(grpc.StatusCode.OK, ""))) == {b"grpc-status": b"0"}


def test_invocation_metadata_drops_transport_headers_and_decodes_bin() -> None:
    headers = [(b":path", b"/a/b"), (b"content-type", b"application/grpc"), (b"te", b"trailers"),
               (b"grpc-timeout", b"1S"), (b"containerd-namespace", b"default"),
               (b"trace-bin", base64.b64encode(b"\x01\x02").rstrip(b"="))]
    md = gc.decode_metadata(headers)
    assert [(m.key, m.value) for m in md] == [("containerd-namespace", "default"), ("trace-bin", b"\x01\x02")]
