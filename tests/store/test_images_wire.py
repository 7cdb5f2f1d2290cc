"""The Images answers the servicer hands the transport as wire bytes.

Get, List, Create and Update return the stored bytes framed as protobuf
(server/images_service.py), sent as they are. What must hold: the bytes
parse to exactly the message the field-by-field path builds, for odd records
too (negative and huge sizes, empty maps, annotations); a record whose
strings are not UTF-8, which protobuf cannot carry, is not framed: it takes
the field-by-field path, as it always did.
"""

from __future__ import annotations

from boltimages.api.containerd.services.images.v1 import images_pb2 as pb
from boltimages.server import images_service as svc
from boltimages.store import codec
from boltimages.store.db import MetadataDB
from boltimages.store.images import Descriptor, Image, ImageStore

DIGEST = "sha256:" + "cd" * 32


def _store(meta_db: MetadataDB) -> ImageStore:
    store = ImageStore(meta_db)
    store.create("ns", Image(name="docker.io/library/a:1", labels={"k": "v", "é": "ü"},
                             target=Descriptor(media_type="application/vnd.oci.image.index.v1+json",
                                               digest=DIGEST, size=1 << 40, annotations={"x": "y"})))
    store.create("ns", Image(name="b", target=Descriptor(media_type="m", digest=DIGEST, size=3)))
    store.create("ns", Image(name="c", labels={"empty-map-next": "1"},
                             target=Descriptor(media_type="m", digest=DIGEST, size=9, annotations={})))

    def negative(tx):
        tx.bucket(b"v1").bucket(b"ns").bucket(b"images").bucket(b"b").bucket(b"target").put(
            b"size", codec.encode_varint(-300))
    meta_db.update(negative)
    return store


def test_stored_records_frame_to_the_message_built_field_by_field(meta_db: MetadataDB) -> None:
    records = _store(meta_db).list_records("ns", [])
    assert len(records) == 3
    for raw in records:
        wire = svc.get_response(raw)
        assert type(wire) is bytes
        assert pb.GetImageResponse.FromString(wire) == pb.GetImageResponse(
            image=svc.image_to_proto(raw.to_image()))
    wire = svc.list_response(records)
    assert type(wire) is bytes
    assert pb.ListImagesResponse.FromString(wire) == pb.ListImagesResponse(
        images=[svc.image_to_proto(raw.to_image()) for raw in records])
    assert svc._wire(wire) is wire


def test_create_answers_with_the_record_as_written(meta_db: MetadataDB) -> None:
    """Create frames the record the writer returns (the C framer, as Get):
    empty values dropped as containerd's writeMap drops them."""
    store = ImageStore(meta_db)
    image = Image(name="n", labels={"a": "1", "b": ""},
                  target=Descriptor(media_type="m", digest=DIGEST, size=5, annotations={"z": "2"}))
    written = store.create_record("ns", image, epoch=codec.Timestamp(1700000000, 5))
    wire = svc.record_response(pb.CreateImageResponse, written)
    assert type(wire) is bytes
    answer = pb.CreateImageResponse.FromString(wire)
    assert answer == pb.CreateImageResponse(image=svc.image_to_proto(store.get("ns", "n")))
    assert dict(answer.image.labels) == {"a": "1"} and answer.image.created_at.nanos == 5
    assert written.wire is not None  # kept with the record, as a Get keeps it


def test_a_record_that_is_not_utf8_takes_the_field_by_field_path(meta_db: MetadataDB) -> None:
    store = _store(meta_db)
    meta_db.update(lambda tx: tx.bucket(b"v1").bucket(b"ns").bucket(b"images").bucket(b"c")
                   .bucket(b"labels").put(b"bad", b"\xff\xfe"))
    records = store.list_records("ns", [])
    bad = [raw for raw in records if raw.name == b"c"][0]
    good = [raw for raw in records if raw.name != b"c"]
    assert type(svc.get_response(good[0])) is bytes
    # not framed (and remembered as such), so Get and List build the
    # answer field by field, exactly as before the bytes were sent as they are
    assert svc._framed(bad) is None and bad.wire == b""
    assert all(type(svc._framed(raw)) is bytes for raw in good)
