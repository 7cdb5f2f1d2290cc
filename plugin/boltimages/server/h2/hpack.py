"""HPACK header compression (RFC 7541): decoder with dynamic table, stateless encoder.

The decoder is complete: indexed fields, the three literal kinds, dynamic
table size updates, and Huffman-coded strings. The encoder never adds to the
peer's dynamic table (every field is a literal without indexing), so it keeps
no state and a response's header block can be cached as bytes; that also
means the peer's SETTINGS_HEADER_TABLE_SIZE never matters to us.
"""

from __future__ import annotations

from collections import deque
from typing import Iterable, Optional

#: RFC 7541 section 4.1: each table entry costs its name and value lengths plus this
ENTRY_OVERHEAD = 32
#: integers longer than this many continuation bytes cannot be a sane length or index
MAX_INTEGER_OCTETS = 5

STATIC_TABLE: tuple[tuple[bytes, bytes], ...] = tuple((n.encode(), v.encode()) for n, v in (
    (":authority", ""), (":method", "GET"), (":method", "POST"), (":path", "/"),
    (":path", "/index.html"), (":scheme", "http"), (":scheme", "https"), (":status", "200"),
    (":status", "204"), (":status", "206"), (":status", "304"), (":status", "400"),
    (":status", "404"), (":status", "500"), ("accept-charset", ""), ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""), ("accept-ranges", ""), ("accept", ""), ("access-control-allow-origin", ""),
    ("age", ""), ("allow", ""), ("authorization", ""), ("cache-control", ""),
    ("content-disposition", ""), ("content-encoding", ""), ("content-language", ""), ("content-length", ""),
    ("content-location", ""), ("content-range", ""), ("content-type", ""), ("cookie", ""),
    ("date", ""), ("etag", ""), ("expect", ""), ("expires", ""),
    ("from", ""), ("host", ""), ("if-match", ""), ("if-modified-since", ""),
    ("if-none-match", ""), ("if-range", ""), ("if-unmodified-since", ""), ("last-modified", ""),
    ("link", ""), ("location", ""), ("max-forwards", ""), ("proxy-authenticate", ""),
    ("proxy-authorization", ""), ("range", ""), ("referer", ""), ("refresh", ""),
    ("retry-after", ""), ("server", ""), ("set-cookie", ""), ("strict-transport-security", ""),
    ("transfer-encoding", ""), ("user-agent", ""), ("vary", ""), ("via", ""),
    ("www-authenticate", ""),
))
STATIC_LEN = len(STATIC_TABLE)
#: first static index carrying each name (for literal-with-name-reference encoding)
_STATIC_NAME_INDEX: dict[bytes, int] = {}
for _i, (_name, _value) in enumerate(STATIC_TABLE, 1):
    _STATIC_NAME_INDEX.setdefault(_name, _i)

# ---------------------------------------------------------------- Huffman (Appendix B)
# The code is canonical: codes of one length are consecutive, in symbol
# order, and each length starts where the shorter ones left off. So the bit
# length of each of the 257 symbols (256 = EOS) determines the whole table.
_HUFFMAN_LENGTHS = bytes([
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28,   # 0x00-0x0f
    28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 28,   # 0x10-0x1f
    6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6,           # ' ' - '/'
    5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10,                # '0' - '?'
    13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,                  # '@' - 'O'
    7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6,               # 'P' - '_'
    15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5,                  # '`' - 'o'
    6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28,              # 'p' - 0x7f
    20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23,   # 0x80-
    24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24,
    22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23,
    21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23,
    26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25,
    19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27,
    20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23,
    26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26,   # -0xff
    30,                                                                # EOS
])
EOS = 256
_MIN_CODE_LEN = 5
_MAX_CODE_LEN = 30


def _canonical_codes() -> tuple[list[int], dict[int, tuple[int, int]], dict[int, list[int]]]:
    """(code per symbol, first code and count per length, symbols per length in code order)."""
    codes = [0] * len(_HUFFMAN_LENGTHS)
    by_length: dict[int, list[int]] = {}
    for sym in sorted(range(len(_HUFFMAN_LENGTHS)), key=lambda s: (_HUFFMAN_LENGTHS[s], s)):
        by_length.setdefault(_HUFFMAN_LENGTHS[sym], []).append(sym)
    code = 0
    prev_len = 0
    first: dict[int, tuple[int, int]] = {}
    for length in sorted(by_length):
        code <<= length - prev_len
        first[length] = (code, len(by_length[length]))
        for sym in by_length[length]:
            codes[sym] = code
            code += 1
        prev_len = length
    return codes, first, by_length


HUFFMAN_CODES, _FIRST_CODE, _SYMBOLS = _canonical_codes()


class HPACKError(Exception):
    """A header block that cannot be decoded: the connection ends with COMPRESSION_ERROR."""


def huffman_encode(data: bytes) -> bytes:
    acc = 0
    nbits = 0
    for byte in data:
        length = _HUFFMAN_LENGTHS[byte]
        acc = (acc << length) | HUFFMAN_CODES[byte]
        nbits += length
    pad = -nbits % 8
    acc = (acc << pad) | ((1 << pad) - 1)  # padded with the EOS prefix (all ones)
    return acc.to_bytes((nbits + pad) // 8, "big")


def _short_codes() -> list[Optional[tuple[int, int]]]:
    """(symbol, length) for every byte value whose leading bits are a code of
    at most 8 bits: letters, digits and common punctuation decode with one lookup."""
    table: list[Optional[tuple[int, int]]] = [None] * 256
    for sym, length in enumerate(_HUFFMAN_LENGTHS):
        if length <= 8:
            start = HUFFMAN_CODES[sym] << (8 - length)
            for i in range(start, start + (1 << (8 - length))):
                table[i] = (sym, length)
    return table


_SHORT_CODES = _short_codes()


def huffman_decode(data: bytes) -> bytes:
    """Linear in ``len(data)``: the bits wait in an accumulator of at most
    37 bits, refilled a byte at a time (a big integer of the whole string,
    shifted per symbol, made a 40 KiB value cost seconds)."""
    out = bytearray()
    short = _SHORT_CODES
    first = _FIRST_CODE
    acc = 0
    bits = 0
    i = 0
    n = len(data)
    while True:
        while bits < _MAX_CODE_LEN and i < n:
            acc = (acc << 8) | data[i]
            i += 1
            bits += 8
        if bits >= 8:
            entry = short[acc >> (bits - 8)]
            if entry is not None:
                out.append(entry[0])
                bits -= entry[1]
                acc &= (1 << bits) - 1
                continue
        sym = -1
        length = _MIN_CODE_LEN
        while length <= bits:
            code = acc >> (bits - length)
            entry2 = first.get(length)
            if entry2 is not None and 0 <= code - entry2[0] < entry2[1]:
                sym = _SYMBOLS[length][code - entry2[0]]
                break
            length += 1
        if sym < 0:
            break  # what is left is padding (checked below) or an incomplete code
        if sym == EOS:
            raise HPACKError("Huffman string contains EOS")
        out.append(sym)
        bits -= length
        acc &= (1 << bits) - 1
    if bits > 7:
        raise HPACKError("Huffman string has an incomplete code or more than 7 bits of padding")
    if acc != (1 << bits) - 1:
        raise HPACKError("Huffman padding is not a prefix of EOS")
    return bytes(out)


# ---------------------------------------------------------------- primitives
def decode_integer(data: bytes, pos: int, prefix_bits: int) -> tuple[int, int]:
    """(value, next position) of the integer whose prefix is the low bits of data[pos]."""
    if pos >= len(data):
        raise HPACKError("header block ends inside an integer")
    limit = (1 << prefix_bits) - 1
    value = data[pos] & limit
    pos += 1
    if value < limit:
        return value, pos
    shift = 0
    for _ in range(MAX_INTEGER_OCTETS):
        if pos >= len(data):
            raise HPACKError("header block ends inside an integer")
        byte = data[pos]
        pos += 1
        value += (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos
    raise HPACKError("integer is too long")


def encode_integer(value: int, prefix_bits: int, first_byte_flags: int = 0) -> bytes:
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first_byte_flags | value])
    out = bytearray([first_byte_flags | limit])
    value -= limit
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _decode_string(data: bytes, pos: int, budget: int) -> tuple[bytes, int]:
    """(string, next position); a string longer than ``budget`` as encoded is
    refused before it is decoded: Huffman decoding here is pure Python (about
    0.5 us a byte), so the header list limit must bound it, not follow it."""
    if pos >= len(data):
        raise HPACKError("header block ends before a string")
    huffman = data[pos] & 0x80
    length, pos = decode_integer(data, pos, 7)
    if length > budget:
        raise HPACKError(f"header list larger than the limit (a string of {length} bytes)")
    end = pos + length
    if end > len(data):
        raise HPACKError(f"string of {length} bytes runs past the header block")
    raw = bytes(data[pos:end])
    return (_huffman_cached(raw) if huffman else raw), end


_HUFFMAN_CACHE: dict[bytes, bytes] = {}
_HUFFMAN_CACHE_MAX = 512


def _huffman_cached(raw: bytes) -> bytes:
    # clients repeat the same few values (paths, namespaces, user agents):
    # decoding bit by bit in Python is the slow part, so remember recent ones
    hit = _HUFFMAN_CACHE.get(raw)
    if hit is None:
        hit = huffman_decode(raw)
        if len(raw) <= 256:
            if len(_HUFFMAN_CACHE) >= _HUFFMAN_CACHE_MAX:
                _HUFFMAN_CACHE.clear()
            _HUFFMAN_CACHE[raw] = hit
    return hit


def encode_string(value: bytes, huffman: bool = False) -> bytes:
    if huffman:
        coded = huffman_encode(value)
        return encode_integer(len(coded), 7, 0x80) + coded
    return encode_integer(len(value), 7) + value


# ---------------------------------------------------------------- decoder
class Decoder:
    """One per connection (the dynamic table is connection state)."""

    def __init__(self, max_table_size: int = 4096, max_header_list_size: int = 1 << 20) -> None:
        #: the limit we advertised (SETTINGS_HEADER_TABLE_SIZE); the peer may choose less
        self.max_allowed_size = max_table_size
        self.table_size_limit = max_table_size
        self.max_header_list_size = max_header_list_size
        self.dynamic: deque[tuple[bytes, bytes]] = deque()
        self.size = 0
        # A client repeating a call sends the very same block once every field
        # sits in the dynamic table (all indexed references). Such a block means
        # the same headers until the table changes; ``generation`` counts changes.
        self.generation = 0
        self._indexed_cache: dict[bytes, tuple[int, list[tuple[bytes, bytes]]]] = {}
        #: why the last decoded list is a malformed request (RFC 9113 8.2-8.3), or None;
        #: decoding goes on regardless, so the dynamic table stays in step
        self.malformed: Optional[str] = None

    def _evict(self) -> None:
        self.generation += 1
        while self.size > self.table_size_limit:
            name, value = self.dynamic.pop()
            self.size -= len(name) + len(value) + ENTRY_OVERHEAD

    def _add(self, name: bytes, value: bytes) -> None:
        cost = len(name) + len(value) + ENTRY_OVERHEAD
        if cost > self.table_size_limit:
            # RFC 7541 4.4: an entry larger than the table empties it and is not added
            self.dynamic.clear()
            self.size = 0
            self.generation += 1
            return
        self.dynamic.appendleft((name, value))
        self.size += cost
        self._evict()

    def _lookup(self, index: int) -> tuple[bytes, bytes]:
        if index <= 0:
            raise HPACKError("header index 0 is not valid")
        if index <= STATIC_LEN:
            return STATIC_TABLE[index - 1]
        dyn = index - STATIC_LEN - 1
        if dyn >= len(self.dynamic):
            raise HPACKError(f"header index {index} is beyond the table ({STATIC_LEN + len(self.dynamic)} entries)")
        return self.dynamic[dyn]

    def decode(self, data: bytes) -> list[tuple[bytes, bytes]]:
        hit = self._indexed_cache.get(data)
        if hit is not None and hit[0] == self.generation:
            self.malformed = None  # only well-formed lists are cached
            return hit[1]  # shared: callers only read header lists
        generation = self.generation
        headers = self._decode(data)
        self.malformed = _malformed(headers)
        if (self.malformed is None and generation == self.generation and len(data) <= 64
                and all(b & 0x80 for b in data)):
            if len(self._indexed_cache) >= 64:
                self._indexed_cache.clear()
            self._indexed_cache[data] = (generation, headers)
        return headers

    def _decode(self, data: bytes) -> list[tuple[bytes, bytes]]:
        headers: list[tuple[bytes, bytes]] = []
        pos = 0
        end = len(data)
        total = 0
        fields_seen = False
        while pos < end:
            byte = data[pos]
            if byte & 0x80:  # indexed field
                index, pos = decode_integer(data, pos, 7)
                field = self._lookup(index)
            elif byte & 0x40:  # literal with incremental indexing
                index, pos = decode_integer(data, pos, 6)
                name = self._lookup(index)[0] if index else None
                if name is None:
                    name, pos = _decode_string(data, pos, self.max_header_list_size - total)
                value, pos = _decode_string(data, pos, self.max_header_list_size - total)
                field = (name, value)
                self._add(name, value)
            elif byte & 0x20:  # dynamic table size update
                if fields_seen:
                    raise HPACKError("dynamic table size update after a header field")
                size, pos = decode_integer(data, pos, 5)
                if size > self.max_allowed_size:
                    raise HPACKError(f"dynamic table size update to {size} exceeds the limit {self.max_allowed_size}")
                self.table_size_limit = size
                self._evict()
                continue
            else:  # literal without indexing (0000) or never indexed (0001)
                index, pos = decode_integer(data, pos, 4)
                name = self._lookup(index)[0] if index else None
                if name is None:
                    name, pos = _decode_string(data, pos, self.max_header_list_size - total)
                value, pos = _decode_string(data, pos, self.max_header_list_size - total)
                field = (name, value)
            fields_seen = True
            total += len(field[0]) + len(field[1]) + ENTRY_OVERHEAD
            if total > self.max_header_list_size:
                raise HPACKError(f"header list larger than {self.max_header_list_size} bytes")
            headers.append(field)
        return headers


def _malformed(headers: list[tuple[bytes, bytes]]) -> Optional[str]:
    """Why a decoded field list breaks RFC 9113's header rules, or None.

    8.2.1: field names must be lowercase; 8.3: pseudo-header fields come
    before every regular field. (A receiver treats such a request as
    malformed: a stream error, never a served call.)"""
    regular = False
    for name, _ in headers:
        if name[:1] == b":":
            if regular:
                return f"pseudo-header {name.decode('ascii', 'replace')} after a regular field"
        else:
            regular = True
        if name != name.lower():
            return f"header name {name.decode('ascii', 'replace')!r} is not lowercase"
    return None


# ---------------------------------------------------------------- encoder
def encode_field(name: bytes, value: bytes, huffman: bool = False) -> bytes:
    """One field as a literal without indexing (name by static index when there is one)."""
    index = _STATIC_NAME_INDEX.get(name)
    if index is not None:
        return encode_integer(index, 4) + encode_string(value, huffman)
    return b"\x00" + encode_string(name, huffman) + encode_string(value, huffman)


def encode_headers(headers: Iterable[tuple[bytes, bytes]], huffman: bool = False) -> bytes:
    out = []
    for name, value in headers:
        if name == b":status":
            for i in range(8, 15):
                if STATIC_TABLE[i - 1][1] == value:
                    out.append(bytes([0x80 | i]))
                    break
            else:
                out.append(encode_field(name, value, huffman))
        else:
            out.append(encode_field(name, value, huffman))
    return b"".join(out)


def static_index(name: bytes, value: Optional[bytes] = None) -> Optional[int]:
    for i, (n, v) in enumerate(STATIC_TABLE, 1):
        if n == name and (value is None or v == value):
            return i
    return None
