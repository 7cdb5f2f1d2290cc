"""An update whose mask names only labels takes a shorter path (it works on
the stored bytes and leaves the target and createdat as they are); it must
give the same answer, the same error and the same file as the general path.

Each case writes one record, plain or damaged in the ways a file may be
(times in other forms, a size varint that is not canonical, a media type
that is not text, empty values and nested buckets in the maps, unknown
keys), copies the file, and updates one copy through the store as it is
and the other with the short path switched off. Seeds are in the test ids.
"""

from __future__ import annotations

import random
import shutil
from typing import Any, Optional

import pytest

from boltimages import bolt
from boltimages.store import codec, images as images_module, layout
from boltimages.store.db import MetadataDB
from boltimages.store.images import Descriptor, Image, ImageStore
from tests.helpers import bucket_tree

NS = "labels-path"
NAME = "registry.example/app:1"
EPOCH = codec.Timestamp(1_800_000_000, 5)
LEASE = "lease-1"


def _time_bytes(rng: random.Random, damaged: bool) -> Optional[bytes]:
    ts = codec.Timestamp(rng.randrange(0, 2_000_000_000), rng.randrange(0, 1_000_000_000))
    kind = rng.choice(["v1", "offset", "seconds-offset", "absent", "junk"]) if damaged else "v1"
    if kind == "v1":
        return codec.encode_time(ts)
    if kind == "offset":
        return codec.encode_time(codec.Timestamp(ts.seconds, ts.nanos, 3600))
    if kind == "seconds-offset":
        return codec.encode_time(codec.Timestamp(ts.seconds, ts.nanos, 3601))
    if kind == "absent":
        return None
    return b"\x07" + bytes(14)


def _fill_map(bucket: "bolt.Bucket", rng: random.Random, prefix: str) -> None:
    for i in range(rng.randrange(0, 4)):
        bucket.put(f"{prefix}{i}".encode(), rng.choice([b"", b"v", b"value-" + bytes([65 + i])]))
    if rng.random() < 0.15:
        bucket.create_bucket(f"{prefix}nested".encode()).put(b"k", b"v")


def _target_field(rng: random.Random, damaged: bool, good: bytes, bad: list[bytes]) -> Optional[bytes]:
    if not damaged:
        return good
    return rng.choice([None, good, *bad])


def _write_record(db: MetadataDB, rng: random.Random) -> None:
    """A record, plain three times in five; else damaged somewhere."""
    damaged = rng.random() < 0.4

    def write(tx: bolt.Tx) -> None:
        ns = tx.create_bucket_if_not_exists(layout.SCHEMA_BUCKET).create_bucket(NS.encode())
        if rng.random() < 0.5:
            ns.create_bucket(layout.LEASES_BUCKET).create_bucket(LEASE.encode())
        record = ns.create_bucket(layout.IMAGES_BUCKET).create_bucket(NAME.encode())
        for key in (layout.CREATED_AT_KEY, layout.UPDATED_AT_KEY):
            value = _time_bytes(rng, damaged)
            if value is not None:
                record.put(key, value)
        if rng.random() < 0.7:
            _fill_map(record.create_bucket(layout.LABELS_BUCKET), rng, "label")
        if rng.random() < 0.4:
            _fill_map(record.create_bucket(layout.ANNOTATIONS_BUCKET), rng, "note")
        if rng.random() < 0.1:
            record.put(b"unknown", b"kept?")
        if damaged and rng.random() < 0.1:
            return  # no target bucket
        target = record.create_bucket(layout.TARGET_BUCKET)
        fields = (
            (layout.DIGEST_KEY, b"sha256:" + b"ab" * 32, [b"sha256:short", b"md5:" + b"0" * 32]),
            (layout.MEDIA_TYPE_KEY, b"application/vnd.oci.image.index.v1+json", [b"", b"\xff\xfe"]),
            (layout.SIZE_KEY, codec.encode_varint(rng.randrange(1, 1 << 20)),
             [codec.encode_varint(0), b"\x84\x80\x00", codec.encode_varint(-5)]),
        )
        for key, good, bad in fields:
            value = _target_field(rng, damaged, good, bad)
            if value is not None:
                target.put(key, value)
        if rng.random() < 0.1:
            target.put(b"urls", b"x")
    db.update(write)


def _request(rng: random.Random) -> tuple[Image, list[str], Optional[str]]:
    keys = ["label0", "label1", "label3", "new", "containerd.io/gc.expire"]
    labels: Optional[dict[str, str]] = None
    if rng.random() < 0.85:
        labels = {k: rng.choice(["", "x", "2030-01-01T00:00:00Z"]) for k in rng.sample(keys, rng.randrange(0, 4))}
        if rng.random() < 0.05:
            labels["big"] = "v" * 4096
    paths = [rng.choice(["labels"] + [f"labels.{k}" for k in keys]) for _ in range(rng.randrange(1, 4))]
    given = Image(name=NAME, labels=labels,
                  target=Descriptor(media_type="ignored/type", digest="sha256:" + "cd" * 32, size=7))
    return given, paths, rng.choice([None, None, LEASE, "missing-lease"])


def _outcome(path: str, given: Image, paths: list[str], lease: Optional[str]) -> tuple[Any, Any, Any]:
    db = MetadataDB(path)
    try:
        try:
            raw = ImageStore(db).update_record(NS, given, paths, epoch=EPOCH, lease=lease)
        except Exception as exc:  # noqa: BLE001 - the error is what is compared
            answer: Any = (type(exc).__name__, str(exc))
        else:
            try:
                answer = raw.to_image()
            except Exception as exc:  # noqa: BLE001
                answer = ("to_image", type(exc).__name__, str(exc))
            fields = (raw.name, raw.created, raw.updated, raw.labels, raw.annotations, raw.has_target,
                      raw.digest, raw.media_type, raw.size)
            answer = (answer, fields)
        return answer, db.view(lambda tx: bucket_tree(tx.bucket(layout.SCHEMA_BUCKET))), None
    finally:
        db.close()


@pytest.mark.parametrize("seed", range(400))
def test_labels_only_update_matches_the_general_path(tmp_path, monkeypatch, seed: int) -> None:
    rng = random.Random(seed)
    original = tmp_path / "stored.db"
    db = MetadataDB(original)
    _write_record(db, rng)
    db.close()
    given, paths, lease = _request(rng)
    short, general = tmp_path / "short.db", tmp_path / "general.db"
    shutil.copy(original, short)
    shutil.copy(original, general)

    got = _outcome(str(short), given, paths, lease)
    monkeypatch.setattr(images_module, "_plain_record", lambda stored: False)
    want = _outcome(str(general), given, paths, lease)
    assert got == want, (paths, given.labels, lease)


def test_the_short_path_is_taken_for_a_plain_record(tmp_path, monkeypatch) -> None:
    """Guards the test above against comparing the general path with itself."""
    db = MetadataDB(tmp_path / "plain.db")
    store = ImageStore(db)
    store.create(NS, Image(name=NAME, labels={"a": "1"},
                           target=Descriptor(media_type="application/x", digest="sha256:" + "ab" * 32, size=3)))
    taken = []
    real = images_module._update_labels
    monkeypatch.setattr(images_module, "_update_labels", lambda *a: taken.append(1) or real(*a))
    updated = store.update(NS, Image(name=NAME, labels={"b": "2"}), ["labels"], epoch=EPOCH)
    assert taken == [1]
    assert updated.labels == {"b": "2"} and updated.updated_at == EPOCH
    assert updated.target.digest == "sha256:" + "ab" * 32
    db.close()
