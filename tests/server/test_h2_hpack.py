"""HPACK (server/h2/hpack.py) against the worked examples of RFC 7541 Appendix C."""

from __future__ import annotations

import pytest

from boltimages.server.h2 import hpack


def unhex(text: str) -> bytes:
    return bytes.fromhex("".join(text.split()))


def fields(*pairs: tuple[str, str]) -> list[tuple[bytes, bytes]]:
    return [(n.encode(), v.encode()) for n, v in pairs]


def table(decoder: hpack.Decoder) -> list[tuple[bytes, bytes]]:
    return list(decoder.dynamic)


# ---------------------------------------------------------------- C.1 integers
@pytest.mark.parametrize("value,prefix,wire", [(10, 5, "0a"), (1337, 5, "1f9a0a"), (42, 8, "2a")])
def test_integer_examples_c1(value: int, prefix: int, wire: str) -> None:
    assert hpack.encode_integer(value, prefix) == unhex(wire)
    assert hpack.decode_integer(unhex(wire), 0, prefix) == (value, len(unhex(wire)))


# ---------------------------------------------------------------- C.2 single fields
def test_c2_1_literal_with_indexing() -> None:
    d = hpack.Decoder()
    assert d.decode(unhex("400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572")) == \
        fields(("custom-key", "custom-header"))
    assert table(d) == fields(("custom-key", "custom-header"))
    assert d.size == 55


def test_c2_2_literal_without_indexing() -> None:
    d = hpack.Decoder()
    assert d.decode(unhex("040c 2f73 616d 706c 652f 7061 7468")) == fields((":path", "/sample/path"))
    assert table(d) == []


def test_c2_3_never_indexed() -> None:
    d = hpack.Decoder()
    assert d.decode(unhex("1008 7061 7373 776f 7264 0673 6563 7265 74")) == fields(("password", "secret"))
    assert table(d) == []


def test_c2_4_indexed() -> None:
    d = hpack.Decoder()
    assert d.decode(b"\x82") == fields((":method", "GET"))
    assert table(d) == []


# ---------------------------------------------------------------- C.3 / C.4 requests
REQUESTS = [
    (fields((":method", "GET"), (":scheme", "http"), (":path", "/"), (":authority", "www.example.com")),
     fields((":authority", "www.example.com")), 57),
    (fields((":method", "GET"), (":scheme", "http"), (":path", "/"), (":authority", "www.example.com"),
            ("cache-control", "no-cache")),
     fields(("cache-control", "no-cache"), (":authority", "www.example.com")), 110),
    (fields((":method", "GET"), (":scheme", "https"), (":path", "/index.html"), (":authority", "www.example.com"),
            ("custom-key", "custom-value")),
     fields(("custom-key", "custom-value"), ("cache-control", "no-cache"), (":authority", "www.example.com")), 164),
]
C3 = ["8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
      "8286 84be 5808 6e6f 2d63 6163 6865",
      "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65"]
C4 = ["8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff",
      "8286 84be 5886 a8eb 1064 9cbf",
      "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf"]


@pytest.mark.parametrize("wire", [C3, C4], ids=["C.3-plain", "C.4-huffman"])
def test_request_series(wire: list[str]) -> None:
    d = hpack.Decoder()
    for block, (want, want_table, want_size) in zip(wire, REQUESTS):
        assert d.decode(unhex(block)) == want
        assert table(d) == want_table
        assert d.size == want_size


# ---------------------------------------------------------------- C.5 / C.6 responses, 256-byte table
DATE1 = "Mon, 21 Oct 2013 20:13:21 GMT"
DATE2 = "Mon, 21 Oct 2013 20:13:22 GMT"
COOKIE = "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1"
LOC = "https://www.example.com"
RESPONSES = [
    (fields((":status", "302"), ("cache-control", "private"), ("date", DATE1), ("location", LOC)),
     fields(("location", LOC), ("date", DATE1), ("cache-control", "private"), (":status", "302")), 222),
    (fields((":status", "307"), ("cache-control", "private"), ("date", DATE1), ("location", LOC)),
     fields((":status", "307"), ("location", LOC), ("date", DATE1), ("cache-control", "private")), 222),
    (fields((":status", "200"), ("cache-control", "private"), ("date", DATE2), ("location", LOC),
            ("content-encoding", "gzip"), ("set-cookie", COOKIE)),
     fields(("set-cookie", COOKIE), ("content-encoding", "gzip"), ("date", DATE2)), 215),
]
C5 = ["""4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133
         2032 303a 3133 3a32 3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65 7861 6d70 6c65 2e63 6f6d""",
      "4803 3330 37c1 c0bf",
      """88c1 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3220 474d
         54c0 5a04 677a 6970 7738 666f 6f3d 4153 444a 4b48 514b 425a 584f 5157 454f 5049
         5541 5851 5745 4f49 553b 206d 6178 2d61 6765 3d33 3630 303b 2076 6572 7369 6f6e 3d31"""]
C6 = ["""4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6
         2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3""",
      "4883 640e ffc1 c0bf",
      """88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab
         77ad 94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f
         9587 3160 65c0 03ed 4ee5 b106 3d50 07"""]


@pytest.mark.parametrize("wire", [C5, C6], ids=["C.5-plain", "C.6-huffman"])
def test_response_series_with_eviction(wire: list[str]) -> None:
    d = hpack.Decoder(max_table_size=256)
    for block, (want, want_table, want_size) in zip(wire, RESPONSES):
        assert d.decode(unhex(block)) == want
        assert table(d) == want_table
        assert d.size == want_size


# ---------------------------------------------------------------- Huffman and hostile input
def test_huffman_round_trip_every_byte() -> None:
    data = bytes(range(256)) * 3
    assert hpack.huffman_decode(hpack.huffman_encode(data)) == data
    assert hpack.huffman_encode(b"www.example.com") == unhex("f1e3 c2e5 f23a 6ba0 ab90 f4ff")


def test_huffman_rejects_bad_padding_and_eos() -> None:
    with pytest.raises(hpack.HPACKError):
        hpack.huffman_decode(b"\x00")          # '0' then 3 zero bits: padding must be ones
    with pytest.raises(hpack.HPACKError):
        hpack.huffman_decode(b"\xff\xff\xff\xff")  # EOS (30 ones) inside the string
    with pytest.raises(hpack.HPACKError):
        hpack.huffman_decode(b"\xff")          # 8 bits of padding is too much


@pytest.mark.parametrize("block,why", [
    (b"\x80", "index 0"),
    (b"\xbf\x01", "index past the table"),
    (b"\x41", "ends before the value"),
    (b"\x00\x7f\xff\xff\xff\xff\xff\xff", "integer too long"),
    (b"\x00\x05ab", "string runs past the block"),
    (b"\x82\x3f\xe1\x1f", "size update after a field"),
    (b"\x3f\xe2\x1f", "size update above the advertised limit"),
])
def test_hostile_blocks_raise_hpack_error(block: bytes, why: str) -> None:
    with pytest.raises(hpack.HPACKError):
        hpack.Decoder().decode(block)


def test_table_size_update_evicts() -> None:
    d = hpack.Decoder()
    d.decode(unhex("400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572"))
    d.decode(b"\x20")  # size update to 0 empties the table
    assert table(d) == [] and d.size == 0


def test_encoder_output_decodes() -> None:
    headers = fields((":status", "200"), ("content-type", "application/grpc"), ("grpc-status", "13"),
                     ("grpc-message", "x" * 300))
    for huffman in (False, True):
        assert hpack.Decoder().decode(hpack.encode_headers(headers, huffman=huffman)) == headers
