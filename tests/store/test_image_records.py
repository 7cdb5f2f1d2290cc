"""The packed-walk image reader and its per-file-state snapshots.

The reader must give exactly what a per-bucket reader written after
containerd's readImage (kept here as the reference) gives, for odd records too; the snapshot kept between calls must never
outlive the file state it was read from, whoever changes the file.
"""

from __future__ import annotations

import re

import pytest

from boltimages.errors import DataCorruption, InvalidArgument, NotFound, go_quote
from boltimages.store import codec, image_records, layout
from boltimages.store.db import MetadataDB
from boltimages.store.images import Descriptor, Image, ImageStore
from tests.helpers import bucket_tree

DIGEST = "sha256:" + "ab" * 32


def image(name: str, **labels: str) -> Image:
    return Image(name=name, labels=dict(labels) or None,
                 target=Descriptor(media_type="application/vnd.oci.image.manifest.v1+json",
                                   digest=DIGEST, size=1234))


def images_bucket(tx, ns: str = "ns"):
    return tx.bucket(b"v1").bucket(ns.encode()).bucket(b"images")


def _read_map(bucket, name: bytes):
    sub = bucket.bucket(name)
    if sub is None:
        return None
    # containerd's boltutil.readMap: ForEach gives a nested bucket a nil value, read as ""
    return {k.decode("utf-8", "surrogateescape"): (v or b"").decode("utf-8", "surrogateescape")
            for k, v in sub.items()}


def read_image(name: str, bucket) -> Image:
    """containerd's readImage over the bucket API, one lookup per field."""
    image = Image(name=name)
    for key, attr in ((layout.CREATED_AT_KEY, "created_at"), (layout.UPDATED_AT_KEY, "updated_at")):
        raw = bucket.get(key)
        if raw is not None:
            try:
                setattr(image, attr, codec.decode_time(raw))
            except codec.CodecError as exc:
                raise DataCorruption(f"image {go_quote(name)}: {exc}") from None
    image.labels = _read_map(bucket, layout.LABELS_BUCKET)
    image.target.annotations = _read_map(bucket, layout.ANNOTATIONS_BUCKET)
    target = bucket.bucket(layout.TARGET_BUCKET)
    if target is None:
        raise DataCorruption(f"image {go_quote(name)}: unable to read target bucket")
    for key, value in target.items():
        if value is None:
            continue
        if key == layout.DIGEST_KEY:
            image.target.digest = value.decode("utf-8", "surrogateescape")
        elif key == layout.MEDIA_TYPE_KEY:
            image.target.media_type = value.decode("utf-8", "surrogateescape")
        elif key == layout.SIZE_KEY:
            image.target.size = codec.decode_varint_lenient(value)
    return image


def reference(meta_db: MetadataDB, ns: str = "ns") -> list[Image]:
    """The per-bucket reader over every image bucket, in key order."""
    def read(tx):
        images = images_bucket(tx, ns)
        return [read_image(k.decode("utf-8", "surrogateescape"), images.bucket(k))
                for k, v in images.items() if v is None]
    return meta_db.view(read)


def test_odd_records_read_like_the_per_bucket_reader(meta_db: MetadataDB) -> None:
    store = ImageStore(meta_db)
    store.create("ns", image("a", x="1"))
    store.create("ns", image("b"))

    def odd(tx):
        images = images_bucket(tx)
        images.put(b"plain-key", b"skipped")  # a value where a record belongs
        rec = images.create_bucket(b"c\xff")  # not UTF-8
        rec.put(b"createdat", codec.encode_time(codec.Timestamp(5, 7, offset=3601)))  # 16-byte form
        rec.put(b"other", b"ignored")
        labels = rec.create_bucket(b"labels")
        labels.put(b"k", b"v\xfe")
        labels.create_bucket(b"nested").put(b"deep", b"ignored")
        rec.create_bucket(b"annotations")  # present but empty
        target = rec.create_bucket(b"target")
        target.put(b"size", codec.encode_varint(-300))
        target.create_bucket(b"digest")  # a bucket where a value belongs
        target.put(b"mediatype", b"m")
        images.bucket(b"a").bucket(b"target").put(b"size", codec.encode_varint(1 << 40))
    meta_db.update(odd)
    assert store.list("ns") == reference(meta_db)
    for img in reference(meta_db)[:2]:  # names a request can carry (UTF-8)
        assert store.get("ns", img.name) == img
    meta_db.update(lambda tx: None)  # a new file state: Get reads the record itself
    assert [store.get("ns", i.name) for i in reference(meta_db)[:2]] == reference(meta_db)[:2]


def test_damage_fails_the_list_whatever_the_filter(meta_db: MetadataDB) -> None:
    store = ImageStore(meta_db)
    store.create("ns", image("a", keep="1"))
    store.create("ns", image("b"))
    meta_db.update(lambda tx: images_bucket(tx).bucket(b"b").put(b"updatedat", b"\x01short"))
    with pytest.raises(DataCorruption, match="image \"b\""):
        store.list("ns", ["labels.keep==1"])
    assert store.get("ns", "a").labels == {"keep": "1"}
    with pytest.raises(DataCorruption):
        store.get("ns", "b")
    meta_db.update(lambda tx: images_bucket(tx).bucket(b"b").delete_bucket(b"target"))
    meta_db.update(lambda tx: images_bucket(tx).bucket(b"b").delete(b"updatedat"))
    with pytest.raises(DataCorruption, match="unable to read target bucket"):
        store.list("ns")


def test_snapshot_follows_every_commit(meta_db: MetadataDB) -> None:
    store = ImageStore(meta_db)
    other = ImageStore(meta_db)  # a second writer on the same file
    store.create("ns", image("a", v="1"))
    assert [i.name for i in store.list("ns")] == ["a"]
    other.create("ns", image("b"))
    assert [i.name for i in store.list("ns")] == ["a", "b"]
    other.update("ns", image("a", v="2"), ["labels"])
    assert store.get("ns", "a").labels == {"v": "2"}
    assert [i.name for i in store.list("ns", ["labels.v==2"])] == ["a"]
    # a change made below the store, straight through the engine
    meta_db.update(lambda tx: images_bucket(tx).delete_bucket(b"a"))
    with pytest.raises(NotFound):
        store.get("ns", "a")
    assert [i.name for i in store.list("ns")] == ["b"]
    # a rolled-back write changes nothing and the snapshot stays right
    with pytest.raises(RuntimeError):
        def fail(tx):
            images_bucket(tx).delete_bucket(b"b")
            raise RuntimeError("roll back")
        meta_db.update(fail)
    assert [i.name for i in store.list("ns")] == ["b"]
    assert store.list("ns") == reference(meta_db)


def test_get_from_a_current_snapshot_opens_no_transaction(meta_db: MetadataDB, monkeypatch) -> None:
    """After a List, a Get answers from the snapshot while the file has not
    changed; the first commit after it sends the Get back to the file."""
    store = ImageStore(meta_db)
    store.create("ns", image("a", v="1"))
    listed = store.list_records("ns")
    assert meta_db.committed_txid() == meta_db.view(lambda tx: tx.id)
    real_view = meta_db.view
    monkeypatch.setattr(meta_db, "view", lambda fn: pytest.fail("a transaction was opened"))
    assert store.get_record("ns", "a") is listed[0]
    with pytest.raises(NotFound):
        store.get_record("ns", "missing")
    monkeypatch.setattr(meta_db, "view", real_view)
    # a change made below the store, straight through the engine
    meta_db.update(lambda tx: images_bucket(tx).bucket(b"a").bucket(b"labels").put(b"v", b"2"))
    assert meta_db.committed_txid() == meta_db.view(lambda tx: tx.id)
    assert store.get("ns", "a").labels == {"v": "2"}


def test_snapshots_are_per_namespace_and_bounded() -> None:
    snaps = image_records.Snapshots(budget=100)
    a, b = [image_records.RawImage(b"a")], [image_records.RawImage(b"b")]
    snaps.keep("x", 5, a, 60)
    assert snaps.current("x", 5).records is a
    assert snaps.current("x", 6) is None
    # one commit behind is left in place: advance() may be about to move it
    assert snaps.current("x", 5).records is a
    assert snaps.current("x", 7) is None
    assert snaps.current("x", 5) is None  # a reader two commits on dropped the stale one
    snaps.keep("x", 6, a, 60)
    snaps.keep("y", 6, b, 60)  # over budget together: the other namespace goes
    assert snaps.current("x", 6) is None and snaps.current("y", 6).records is b
    snaps.keep("z", 6, a, 101)  # larger than the budget: never kept
    assert snaps.current("z", 6) is None
    snaps.keep("y", 4, a, 10)  # an older reader does not replace a newer snapshot
    assert snaps.current("y", 6).records is b


def test_selection_gives_what_the_generic_selector_gives() -> None:
    """select() tests labels/annotations selectors on the stored bytes; every
    filter must pick exactly the records Selector.match over lookup picks."""
    import random

    from boltimages.store.filters import parse_all
    from boltimages.store.image_records import RawImage

    rng = random.Random(7)
    keys = [b"a", b"b", b"a.b", b"org.example/x", "é".encode(), b""]
    values = [b"", b"1", b"3", b"x y", "ü".encode(), b"\xff\xfe"]

    def pairs():
        if rng.random() < 0.2:
            return None
        return sorted({rng.choice(keys): rng.choice(values) for _ in range(rng.randrange(0, 4))}.items())

    media_types = [b"m", b"application/vnd.oci.image.index.v1+json", b"", None, b"\xce\xb1\xff"]
    records = [RawImage(f"img-{i}".encode(), labels=pairs(), annotations=pairs(), has_target=True,
                        digest=b"sha256:" + b"ab" * 32, media_type=rng.choice(media_types)) for i in range(400)]
    filters = ["labels.a==1", "labels.a!=1", "labels.a", "labels.\"a.b\"==3", "labels.a.b==3",
               "annotations.\"org.example/x\"==\"x y\"", "labels.\"é\"==ü", "labels.b==\"\"", "labels.b!=\"\"",
               "labels.a==1,labels.b==3", "labels.a~=^[13]$", "name==img-5", "labels.a==1,name~=img-1",
               "annotations.b", "labels.zzz!=q", "labels==1",
               # ~= searches the stored bytes (each distinct value once); bad UTF-8 reads as U+FFFD
               "labels.a~=^$", "labels.b~=^\\x{FFFD}\\x{FFFD}$", "labels.b~=^..$", "labels.\"é\"~=\\pL",
               "target.mediatype~=index", "target.mediatype~=^$", "target.mediatype~=\\p{Greek}\\x{FFFD}",
               "target.digest~=^sha256:", "name~=img-1.$", "name.x~=img", "target~=.", "labels~=.",
               "labels.a~=(", "name~=\\C"]
    checked = 0
    for text in filters:
        for combo in ([text], [text, rng.choice(filters)]):
            try:
                matcher = parse_all(combo)
            except Exception:  # noqa: BLE001 - a filter the parser refuses is not this test's subject
                continue
            want = [raw for raw in records if matcher.match(raw.lookup)]
            assert image_records.select(records, matcher) == want, combo
            checked += 1
    assert checked >= 50


def _stored(meta_db: MetadataDB, name: bytes) -> image_records.RawImage:
    return meta_db.view(lambda tx: image_records.read_one(name, images_bucket(tx).bucket(name)))


@pytest.mark.parametrize("field,value,reason", [
    ("digest", b"notadigest", 'Target.Digest "notadigest" invalid: invalid checksum digest format'),
    ("size", codec.encode_varint(-5), "Target.Size must be greater than zero"),
    ("media_type", b"", "Target.MediaType must be set"),
    ("labels", [(b"k", b"v" * 5000)], "image.Labels: label key and value length (5001 bytes) greater than maximum size"),
    ("name", b"", "image name must not be empty"),
    ("created", None, "createdAt: missing"),
    ("updated", b"\x09garbage", "updatedAt: Time.UnmarshalBinary: unsupported version"),
])
def test_the_offline_writer_refuses_what_containerd_refuses(meta_db: MetadataDB, field, value, reason) -> None:
    """replace_record (import, copy, tag) validates first: a refused record touches nothing."""
    ImageStore(meta_db).create("ns", image("a:1", k="v"))
    stored = _stored(meta_db, b"a:1")
    bad = image_records.RawImage(b"a:1", stored.created, stored.updated, stored.labels, stored.annotations,
                                 True, stored.digest, stored.media_type, stored.size)
    setattr(bad, field, value)
    before = meta_db.view(lambda tx: bucket_tree(images_bucket(tx)))
    with pytest.raises(InvalidArgument, match=re.escape(reason)):
        meta_db.update(lambda tx: image_records.replace_record(images_bucket(tx), bad))
    assert meta_db.view(lambda tx: bucket_tree(images_bucket(tx))) == before
    # the same record, valid, is written whole
    meta_db.update(lambda tx: image_records.replace_record(images_bucket(tx), stored))
    assert image_records.same_content(_stored(meta_db, b"a:1"), stored)
