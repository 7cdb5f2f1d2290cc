"""The C framer of stored image records (native/pyext/wire.c) against the
Python one it replaced on the Get/List path.

Both must give the same bytes for any record the store can hand over:
odd sizes (zero, negative, past 2**63), long strings whose lengths need
three-byte varints, empty and absent maps, every stored time form, and
strings that are not UTF-8 (no answer: the servicer then builds the
message field by field). The UTF-8 rule itself is compared with Python's
strict decoder over every one- and two-byte string and many longer ones.
"""

from __future__ import annotations

import random
import struct
from array import array
from typing import Optional

import pytest

from boltimages import _wire
from boltimages.api.containerd.services.images.v1 import images_pb2 as pb
from boltimages.server import images_service as svc
from boltimages.store import codec
from boltimages.store.image_records import RawImage

SEED = 20261127

# byte strings that are not UTF-8 for each reason the decoder has
NOT_UTF8 = [b"\xff", b"\x80", b"\xc0\x80", b"\xc1\xbf", b"\xe0\x80\x80", b"\xe0\x9f\xbf",
            b"\xed\xa0\x80", b"\xed\xbf\xbf", b"\xf0\x80\x80\x80", b"\xf0\x8f\xbf\xbf",
            b"\xf4\x90\x80\x80", b"\xf5\x80\x80\x80", b"\xc3", b"\xe2\x82", b"\xf0\x9f\x98",
            b"abcdefgh\xc3(", b"\xe2\x28\xa1", b"ok\xf0\x9f\x98\x80\x80"]
# and ones that are, at each boundary
UTF8 = [b"", b"a", b"\x7f", b"\xc2\x80", b"\xdf\xbf", b"\xe0\xa0\x80", b"\xed\x9f\xbf", b"\xee\x80\x80",
        b"\xef\xbf\xbf", b"\xf0\x90\x80\x80", b"\xf4\x8f\xbf\xbf", "é ü 日本 😀".encode(),
        b"0123456789abcdef" * 3 + "é".encode()]


def _time(seconds: int, nanos: int = 0, offset: Optional[int] = None) -> bytes:
    return codec.encode_time(codec.Timestamp(seconds, nanos, offset))


def _c(raw: RawImage):  # type: ignore[no-untyped-def]
    return _wire.frame_record(raw)


def _record(rng: random.Random) -> RawImage:
    def text() -> bytes:
        roll = rng.random()
        if roll < 0.03:
            return rng.choice(NOT_UTF8)
        if roll < 0.15:
            return rng.choice(UTF8)
        if roll < 0.18:
            return b"x" * rng.choice([127, 128, 16383, 16384, 20000])
        return bytes(rng.choice(b"abcdefghijklmnopqrstuvwxyz0123456789./:-_") for _ in range(rng.randrange(0, 40)))

    def pairs() -> Optional[list[tuple[bytes, bytes]]]:
        if rng.random() < 0.3:
            return None
        return sorted({text(): text() for _ in range(rng.randrange(0, 5))}.items())

    def stamp() -> Optional[bytes]:
        roll = rng.random()
        if roll < 0.1:
            return None
        if roll < 0.2:  # the 16-byte form: a zone offset with seconds
            return _time(rng.randrange(-10**10, 10**10), rng.randrange(10**9), 3601)
        if roll < 0.25:  # a zone offset in whole minutes: still 15 bytes, version 1
            return _time(rng.randrange(-10**10, 10**10), rng.randrange(10**9), -7200)
        if roll < 0.3:  # Go's extremes: seconds past int64 once made Unix
            return struct.pack(">Bqih", 1, rng.choice([-(1 << 63), (1 << 63) - 1, 0]), 999_999_999, -1)
        return _time(rng.randrange(0, 1 << 33), rng.choice([0, 1, 999_999_999, rng.randrange(10**9)]))

    raw = RawImage(text())
    raw.labels, raw.annotations = pairs(), pairs()
    raw.media_type = None if rng.random() < 0.1 else text()
    raw.digest = None if rng.random() < 0.1 else text()
    raw.has_target = True
    size = rng.choice([0, 1, -1, 300, -300, (1 << 62), -(1 << 62), rng.randrange(-10**12, 10**12)])
    raw.size = None if rng.random() < 0.1 else codec.encode_varint(size)
    raw.created, raw.updated = stamp(), stamp()
    return raw


def test_c_and_python_frame_every_record_alike() -> None:
    rng = random.Random(SEED)
    seen = {"framed": 0, "not utf-8": 0, "python": 0}
    for _ in range(3000):
        raw = _record(rng)
        expected = svc.framed_in_python(raw)
        got = _c(raw)
        if got is NotImplemented:
            seen["python"] += 1
            assert not (raw.created is None or len(raw.created) == 15) or \
                not (raw.updated is None or len(raw.updated) == 15), "only a time in another form goes back"
        elif got is None:
            seen["not utf-8"] += 1
            assert expected == b"", f"seed {SEED}: C refused a record Python framed"
        else:
            seen["framed"] += 1
            assert got == expected, f"seed {SEED}: bytes differ for {raw.name!r}"
        # whichever way, the servicer's answer is the Python one
        raw.wire = None
        assert (svc._framed(raw) or b"") == expected
    assert all(n > 50 for n in seen.values()), seen


def test_framed_bytes_parse_to_the_message_built_field_by_field() -> None:
    rng = random.Random(SEED + 1)
    checked = 0
    while checked < 300:
        raw = _record(rng)
        wire = _c(raw)
        if type(wire) is not bytes:
            continue
        raw.check()
        try:
            message = pb.GetImageResponse(image=svc.image_to_proto(raw.to_image()))
        except ValueError:
            # a time at Go's extremes: its Unix seconds wrap past int64 (as
            # Go's own time.Unix does) and protobuf's setter refuses them
            continue
        assert pb.GetImageResponse.FromString(wire) == message
        checked += 1


def test_utf8_agrees_with_pythons_strict_decoder() -> None:
    def python(data: bytes) -> bool:
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            return False
        return True

    for b in range(256):
        assert _wire.utf8(bytes([b])) == python(bytes([b]))
    for a in range(256):
        for b in range(256):
            data = bytes([a, b])
            assert _wire.utf8(data) == python(data), data
    rng = random.Random(SEED)
    lead = [0x00, 0x41, 0x7f, 0x80, 0xbf, 0xc2, 0xdf, 0xe0, 0xe1, 0xed, 0xee, 0xef, 0xf0, 0xf1, 0xf4, 0xf5, 0xff]
    tail = [0x00, 0x41, 0x7f, 0x80, 0x8f, 0x90, 0x9f, 0xa0, 0xbf, 0xc0, 0xff]
    for a in lead:
        for b in tail:
            for c in tail:
                for d in tail:
                    data = bytes([a, b, c, d])
                    assert _wire.utf8(data) == python(data), data
    for _ in range(20000):
        # ASCII runs around the multi-byte ones exercise the eight-byte skip
        data = b"a" * rng.randrange(0, 17) + bytes(rng.randrange(256) for _ in range(rng.randrange(0, 6))) \
            + b"b" * rng.randrange(0, 9)
        assert _wire.utf8(data) == python(data), data
    for data in NOT_UTF8:
        assert not _wire.utf8(data)
    for data in UTF8:
        assert _wire.utf8(data)


@pytest.mark.parametrize("field, value, message", [
    ("name", "n", "name must be bytes"),
    ("labels", [(b"k",)], "labels[0] must be a (key, value) tuple"),
    ("labels", [(b"k", "v")], "a map value must be bytes"),
    ("labels", (), "labels must be a list or None"),
    ("media_type", "m", "media_type must be bytes or None"),
    ("size", 1.5, "size must be bytes or None"),
    ("created", 15, "created must be bytes or None"),
])
def test_wrong_field_types_are_type_errors(field: str, value: object, message: str) -> None:
    raw = RawImage(b"n")
    setattr(raw, field, value)
    with pytest.raises(TypeError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        _wire.frame_record(raw)


def _listed(records: list) -> Optional[bytes]:
    """frame_list's answer, after checking that its sizes cut it into the records' parts."""
    count = len(records)  # (the list as it was: reading a record's fields may change it)
    pair = _wire.frame_list(records)
    if pair is None:
        return None
    answer, sizes = pair
    cuts = array("Q", sizes)
    assert len(cuts) == count and sum(cuts) == len(answer)
    at = 0
    for size in cuts:  # each part is one ListImagesResponse.images field: tag, length, message
        assert answer[at] == 0x0A
        length, shift, i = 0, 0, at + 1
        while True:
            length |= (answer[i] & 0x7F) << shift
            shift += 7
            i += 1
            if not answer[i - 1] & 0x80:
                break
        assert i - at + length == size
        at += size
    return answer


def test_a_whole_list_frames_like_its_records_one_by_one() -> None:
    rng = random.Random(SEED + 2)
    for round_ in range(200):
        records = [_record(rng) for _ in range(rng.randrange(0, 12))]
        expected = [svc.framed_in_python(raw) for raw in records]
        if round_ % 3 == 0:
            for raw, wire in zip(records, expected):
                raw.wire = wire or None  # some answers already kept, as a Get keeps them
        kept = [raw.wire for raw in records]
        got = _listed(records)
        assert [raw.wire for raw in records] == kept  # the List's answer is one buffer, kept by no record
        if all(expected) and all(raw.created is None or len(raw.created) == 15 for raw in records) \
                and all(raw.updated is None or len(raw.updated) == 15 for raw in records):
            assert got == b"".join(expected), f"seed {SEED + 2}, round {round_}"
            # records of another class are read through getattr: the same answer
            assert _listed([_Other(raw) for raw in records]) == got
        elif not all(expected):
            assert got is None  # a record that is not UTF-8: the servicer builds a message
        if all(expected):
            # framed in C or record by record (a 16-byte time), the same answer
            for raw in records:
                raw.wire = None
            assert svc.list_response(records) == b"".join(expected)


def test_list_framing_reads_sizes_as_containerd_does() -> None:
    """A stored size as Go's binary.Varint reads it, errors as 0."""
    def framed_size(stored: Optional[bytes]) -> int:
        raw = RawImage(b"n", created=_time(0), updated=_time(0), has_target=True, digest=b"d", media_type=b"m",
                       size=stored)
        wire = _listed([raw])
        assert wire == svc.framed_in_python(raw)
        return raw.size_value()

    assert framed_size(None) == 0
    assert framed_size(codec.encode_varint(-300)) == -300
    assert framed_size(codec.encode_varint((1 << 63) - 1)) == (1 << 63) - 1
    assert framed_size(codec.encode_varint(-(1 << 63))) == -(1 << 63)
    assert framed_size(b"\x80") == 0                       # truncated
    assert framed_size(b"\xff" * 9 + b"\x02") == 0         # overflows 64 bits
    assert framed_size(b"\xff" * 11) == 0                  # too long
    assert framed_size(b"\x04\xff\xff") == 2               # trailing bytes are ignored


def test_frame_list_wants_a_list_of_records() -> None:
    with pytest.raises(TypeError, match="list"):
        _wire.frame_list(())
    with pytest.raises(AttributeError):
        _wire.frame_list([object()])
    raw = RawImage(b"n", size=5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="size must be bytes"):
        _wire.frame_list([raw])


def test_frame_list_survives_a_record_that_changes_the_list() -> None:
    """Reading a record's fields may run code (a property, for anything but
    a RawImage); the list it changes must not be read past its end."""
    records: list = []

    class Shrinking:
        wire = None
        name = b"n"
        labels = annotations = None
        media_type = digest = None
        size = None

        @property
        def created(self) -> None:
            records.clear()
            return None

        updated = None

    records.extend([Shrinking(), RawImage(b"a", has_target=True), RawImage(b"b", has_target=True)])
    wire = _listed(records)
    assert wire is not None and wire.count(b"\x0a\x01n") == 1


class _OtherRecord(RawImage):
    """Not RawImage itself: the framer reads its fields through getattr."""
    __slots__ = ()


def _Other(raw: RawImage) -> RawImage:
    other = _OtherRecord(raw.name)
    for slot in RawImage.__slots__:
        setattr(other, slot, getattr(raw, slot))
    return other


def test_frame_list_refuses_a_record_that_changes_between_its_passes() -> None:
    """The answer is sized first and written second: a record whose fields
    change in between (only code run by a field's getattr can do that) must
    not make it write past its buffer."""
    victim = RawImage(b"short", has_target=True)

    class Changing:
        wire = None
        name = b"n"
        labels = annotations = media_type = digest = size = updated = None
        reads = 0

        @property
        def created(self) -> None:
            Changing.reads += 1
            if Changing.reads == 2:  # the second pass: make the next record longer
                victim.name = b"much longer than it was" * 10
            return None

    with pytest.raises(RuntimeError, match="changed while the List was framed"):
        _wire.frame_list([Changing(), victim])


def test_bind_record_wants_a_class_of_writable_slots() -> None:
    with pytest.raises(TypeError, match="class"):
        _wire.bind_record(5)

    class NoSlots:
        pass

    with pytest.raises(TypeError, match="no slot"):
        _wire.bind_record(NoSlots)

    class ReadOnly:
        wire = name = labels = media_type = digest = size = annotations = created = updated = property(lambda s: 1)

    with pytest.raises(TypeError, match="not a writable slot"):
        _wire.bind_record(ReadOnly)
    # the binding made at import is unchanged: RawImage still frames from its slots
    raw = RawImage(b"n", created=_time(0), updated=_time(0), has_target=True)
    assert _listed([raw]) == svc.framed_in_python(raw)
