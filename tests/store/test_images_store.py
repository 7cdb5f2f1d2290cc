"""ImageStore semantics over a real file (our engine), mirroring containerd's
metadata image store: create/get/list/update/delete, masks, timestamps,
leases, and leaving every bucket we do not own untouched."""

from __future__ import annotations

import pathlib

import pytest

from boltimages import bolt
from boltimages.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from boltimages.store import codec, layout
from boltimages.store.db import NEW_FILE_DB_VERSION, MetadataDB
from boltimages.store.images import Descriptor, Image, ImageStore

D1 = "sha256:" + "11" * 32
D2 = "sha256:" + "22" * 32
MT = "application/vnd.oci.image.manifest.v1+json"


def image(name: str = "docker.io/library/x:1", digest: str = D1, labels=None, annotations=None,
          size: int = 123) -> Image:
    return Image(name=name, labels=labels,
                 target=Descriptor(media_type=MT, digest=digest, size=size, annotations=annotations))


def dump_tx(tx, skip=lambda p: False) -> list[tuple]:
    """Every (path, key, value) visible in a transaction, in order."""
    out: list[tuple] = []

    def walk(bucket, prefix):
        for key, value in bucket.items():
            if value is None:
                child = prefix + (key,)
                if skip(child):
                    continue
                out.append((child, None, None))
                walk(bucket.bucket(key), child)
            else:
                out.append((prefix, key, value))
    walk(tx.root, ())
    return out


def dump(path: pathlib.Path, skip=lambda p: False) -> list[tuple]:
    with bolt.open(path, read_only=True) as db:
        with db.begin() as tx:
            return dump_tx(tx, skip)


def test_new_file_gets_version_3_and_keeps_existing(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "meta.db"
    with MetadataDB(path) as db:
        assert db.db_version() == NEW_FILE_DB_VERSION == 3
    assert dump(path) == [((b"v1",), None, None), ((b"v1",), b"version", b"\x06")]
    with bolt.open(path) as raw:
        raw.update(lambda tx: tx.bucket(b"v1").put(b"version", codec.encode_varint(4)))
    with MetadataDB(path) as db:
        assert db.db_version() == 4


def test_locked_file_is_a_clear_error(tmp_path: pathlib.Path) -> None:
    from boltimages.errors import Unavailable
    path = tmp_path / "meta.db"
    with MetadataDB(path):
        with pytest.raises(Unavailable, match="locked by another process"):
            MetadataDB(path, timeout=0.05)


def test_create_get_layout(meta_db: MetadataDB) -> None:
    store = ImageStore(meta_db)
    created = store.create("default", image(labels={"a": "b", "empty": ""}, annotations={"k": "v"}))
    assert created.labels == {"a": "b"}  # empty values are dropped, like containerd
    assert created.created_at == created.updated_at and created.created_at.offset is None
    got = store.get("default", created.name)
    assert got == created
    rows = meta_db.view(dump_tx)
    record = (b"v1", b"default", b"images", created.name.encode())
    assert (record, b"createdat", codec.encode_time(created.created_at)) in rows
    assert (record + (b"labels",), b"a", b"b") in rows
    assert (record + (b"annotations",), b"k", b"v") in rows
    assert (record + (b"target",), b"size", b"\xf6\x01") in rows
    assert (record + (b"target",), b"digest", D1.encode()) in rows
    assert (record + (b"target",), b"mediatype", MT.encode()) in rows
    # no labels bucket for an image without labels
    store.create("default", image("plain"))
    assert not any(r[0] == (b"v1", b"default", b"images", b"plain", b"labels") for r in meta_db.view(dump_tx))


def test_errors(meta_db: MetadataDB) -> None:
    store = ImageStore(meta_db)
    store.create("default", image())
    with pytest.raises(AlreadyExists, match='^image "docker.io/library/x:1": already exists$'):
        store.create("default", image())
    with pytest.raises(NotFound, match='^image "nope": not found$'):
        store.get("default", "nope")
    with pytest.raises(NotFound, match='^image "": not found$'):
        store.get("default", "")
    with pytest.raises(NotFound):
        store.get("other", "docker.io/library/x:1")
    with pytest.raises(NotFound):
        store.delete("default", "nope")
    with pytest.raises(FailedPrecondition):
        store.get(None, "x")
    with pytest.raises(InvalidArgument):
        store.list("a--b")
    with pytest.raises(NotFound, match='^image "nope": not found$'):
        store.update("default", image("nope"))
    with pytest.raises(InvalidArgument, match="^image name is required for update"):
        store.update("default", image(""))


def test_update_masks(meta_db: MetadataDB) -> None:
    store = ImageStore(meta_db)
    first = store.create("default", image(labels={"a": "b"}, annotations={"k": "v"}))
    patch = image(digest=D2, labels={"c": "d"}, annotations={"z": "1"})
    out = store.update("default", patch, ["labels.c", "labels.a"])
    assert out.labels == {"c": "d"} and out.target.digest == D1 and out.target.annotations == {"k": "v"}
    assert out.created_at == first.created_at and out.updated_at >= first.updated_at
    out = store.update("default", patch, ["annotations.z", "annotations.k"])
    assert out.target.annotations == {"z": "1"}
    out = store.update("default", patch, ["target"])
    assert out.target.digest == D2 and out.target.annotations == {"z": "1"}
    out = store.update("default", image(labels={"x": "y"}), ["labels"])
    assert out.labels == {"x": "y"}
    out = store.update("default", image(annotations={"q": "r"}), ["annotations"])
    assert out.target.annotations == {"q": "r"} and out.target.digest == D2
    with pytest.raises(InvalidArgument, match='^cannot update "name" field on image "docker.io/library/x:1"'):
        store.update("default", patch, ["name"])
    # no mask: replace everything
    out = store.update("default", image(labels=None))
    assert out.labels is None and out.target.digest == D1 and out.target.annotations is None
    assert store.get("default", out.name) == out
    with pytest.raises(InvalidArgument, match="Target.Size"):
        store.update("default", image(size=0))
    assert store.get("default", out.name) == out  # failed update changed nothing


def test_source_date_epoch(meta_db: MetadataDB) -> None:
    store = ImageStore(meta_db)
    epoch = codec.Timestamp(1700000000, 5)
    created = store.create("default", image(), epoch=epoch)
    assert created.created_at == epoch and created.updated_at == epoch
    later = codec.Timestamp(1800000000, 0)
    updated = store.update("default", image(), ["labels"], epoch=later)
    assert updated.created_at == epoch and updated.updated_at == later


def test_list_filters_and_namespaces(meta_db: MetadataDB) -> None:
    store = ImageStore(meta_db)
    store.create("default", image("a", labels={"k": "1"}))
    store.create("default", image("b", labels={"k": "2"}))
    store.create("other", image("c"))
    assert [i.name for i in store.list("default")] == ["a", "b"]
    assert [i.name for i in store.list("default", ["labels.k==2"])] == ["b"]
    assert [i.name for i in store.list("default", ["labels.k==2", "name==a"])] == ["a", "b"]
    assert [i.name for i in store.list("other")] == ["c"]
    assert store.list("empty") == []
    with pytest.raises(InvalidArgument, match="parse error"):
        store.list("default", ["name=="])


def test_delete_with_target(meta_db: MetadataDB) -> None:
    store = ImageStore(meta_db)
    store.create("default", image())
    with pytest.raises(NotFound, match=f'has target {D1}, not {D2}: not found$'):
        store.delete("default", "docker.io/library/x:1", target_digest=D2)
    store.delete("default", "docker.io/library/x:1", target_digest=D1)
    with pytest.raises(NotFound):
        store.get("default", "docker.io/library/x:1")


def test_image_leases(meta_db: MetadataDB) -> None:
    store = ImageStore(meta_db)
    expiring = {"containerd.io/gc.expire": "2030-01-01T00:00:00Z"}
    with pytest.raises(NotFound, match="lease does not exist"):
        store.create("default", image(labels=expiring), lease="l1")
    meta_db.update(lambda tx: tx.bucket(b"v1").create_bucket_if_not_exists(b"default")
                   .create_bucket_if_not_exists(b"leases").create_bucket(b"l1"))
    store.create("default", image(labels=expiring), lease="l1")
    store.create("default", image("no-expiry"), lease="l1")  # not leased: no expire label
    leased = meta_db.view(lambda tx: list(tx.bucket(b"v1").bucket(b"default").bucket(b"leases")
                                          .bucket(b"l1").bucket(b"images").items()))
    assert leased == [(b"docker.io/library/x:1", b"")]
    store.delete("default", "docker.io/library/x:1", lease="l1")
    assert meta_db.view(lambda tx: list(tx.bucket(b"v1").bucket(b"default").bucket(b"leases")
                                        .bucket(b"l1").bucket(b"images").items())) == []


def test_other_buckets_stay_byte_identical(tmp_path: pathlib.Path) -> None:
    """Seed buckets we do not own (as containerd would have them), then write
    images heavily; everything outside v1/<ns>/images must be unchanged."""
    path = tmp_path / "meta.db"
    with bolt.open(path) as raw:
        def seed(tx):
            v1 = tx.create_bucket(b"v1")
            v1.put(b"version", codec.encode_varint(3))
            ns = v1.create_bucket(b"default")
            ns.create_bucket(b"labels").put(b"team", b"x")
            cont = ns.create_bucket(b"containers").create_bucket(b"c1")
            cont.put(b"image", b"docker.io/library/x:1")
            cont.put(b"spec", bytes(range(256)) * 20)
            blob = ns.create_bucket(b"content").create_bucket(b"blob").create_bucket(D1.encode())
            blob.put(b"size", codec.encode_varint(123))
            blob.create_bucket(b"labels").put(b"containerd.io/gc.ref.content.0", D2.encode())
            ns.create_bucket(b"snapshots").create_bucket(b"overlayfs").create_bucket(b"k").put(b"name", b"1")
            ns.create_bucket(b"leases").create_bucket(b"l").put(b"createdat", b"\x01" * 15)
            ns.create_bucket(b"sandboxes").create_bucket(b"s").put(b"x", b"y")
            tx.create_bucket(b"k8s.io").create_bucket(b"sandboxes").put(b"legacy", b"1")  # 1.x root-level
        raw.update(seed)

    def not_images(p: tuple) -> bool:
        return len(p) >= 3 and p[0] == b"v1" and p[2] == layout.IMAGES_BUCKET

    before = dump(path, skip=not_images)
    with MetadataDB(path) as db:
        store = ImageStore(db)
        for i in range(200):
            store.create("default", image(f"img{i}", labels={"n": str(i)}))
        for i in range(0, 200, 2):
            store.update("default", image(f"img{i}", digest=D2), ["target", "labels.extra"])
        for i in range(0, 200, 3):
            store.delete("default", f"img{i}")
        store.create("newns", image())
    after = dump(path, skip=lambda p: not_images(p) or p[:2] == (b"v1", b"newns"))
    assert after == before
    with bolt.open(path, read_only=True) as raw:
        assert raw.check() == []


def test_damaged_records_are_reported_not_fatal(meta_db: MetadataDB) -> None:
    from boltimages.errors import DataCorruption
    store = ImageStore(meta_db)
    store.create("default", image("good"))
    store.create("default", image("bad"))
    images = lambda tx: tx.bucket(b"v1").bucket(b"default").bucket(b"images")  # noqa: E731
    meta_db.update(lambda tx: images(tx).bucket(b"bad").delete_bucket(b"target"))
    with pytest.raises(DataCorruption) as info:
        store.get("default", "bad")
    assert str(info.value) == 'image "bad": unable to read target bucket'  # containerd's text
    assert store.get("default", "good").name == "good"
    # a malformed size reads as 0, like containerd's ignored binary.Varint error
    meta_db.update(lambda tx: images(tx).bucket(b"good").bucket(b"target").put(b"size", b"\x80"))
    assert store.get("default", "good").target.size == 0
