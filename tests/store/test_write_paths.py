"""The lean write paths keep containerd's semantics exactly.

The images store skips lookups and puts whose outcome it already knows (a
record it just created is empty; a target that did not change is not
rewritten); these tests pin the stored tree and the errors those shortcuts
must leave unchanged, plus the event bus's no-subscriber shortcut and the
lone-writer commit in the caller's thread.
"""

from __future__ import annotations

import threading

import pytest

from boltimages import bolt
from boltimages.api.containerd.events import image_pb2 as image_events
from boltimages.errors import AlreadyExists, InvalidArgument, NotFound
from boltimages.server.event_bus import EventBus
from boltimages.store import codec, layout
from boltimages.store.db import MetadataDB
from boltimages.store.images import Descriptor, Image, ImageStore
from tests.helpers import bucket_tree, wait_until

NS = "writes"
MT = "application/vnd.oci.image.manifest.v1+json"
D1 = "sha256:" + "11" * 32
D2 = "sha256:" + "22" * 32
EPOCH = codec.Timestamp(1_700_000_000, 123)
LATER = codec.Timestamp(1_700_000_100, 456)
# Go's zero time.Time as MarshalBinary writes it (UTC: offset marker -1)
GO_ZERO_TIME = bytes([1]) + bytes(12) + b"\xff\xff"


def image(name: str = "docker.io/library/x:1", labels=None, annotations=None, digest: str = D1,
          size: int = 42) -> Image:
    return Image(name=name, labels=labels,
                 target=Descriptor(media_type=MT, digest=digest, size=size, annotations=annotations))


def record_tree(db: MetadataDB, name: str) -> dict:
    def read(tx: bolt.Tx) -> dict:
        images = tx.bucket(layout.SCHEMA_BUCKET).bucket(NS.encode()).bucket(layout.IMAGES_BUCKET)
        return bucket_tree(images.bucket(name.encode()))
    return db.view(read)


def images_bucket_put(db: MetadataDB, key: bytes, value: bytes) -> None:
    def write(tx: bolt.Tx) -> None:
        bucket = tx.create_bucket_if_not_exists(layout.SCHEMA_BUCKET)
        for name in (NS.encode(), layout.IMAGES_BUCKET):
            bucket = bucket.create_bucket_if_not_exists(name)
        bucket.put(key, value)
    db.update(write)


def test_create_writes_the_whole_record(meta_db: MetadataDB) -> None:
    store = ImageStore(meta_db)
    created = store.create(NS, image(labels={"a": "1", "gone": ""}, annotations={"x": "y"}), epoch=EPOCH)
    stamp = codec.encode_time(EPOCH)
    assert record_tree(meta_db, created.name) == {
        b"createdat": stamp, b"updatedat": stamp,
        b"labels": {b"a": b"1"}, b"annotations": {b"x": b"y"},
        b"target": {b"digest": D1.encode(), b"mediatype": MT.encode(), b"size": codec.encode_varint(42)},
    }
    assert created.labels == {"a": "1"}
    assert created.created_at == created.updated_at == EPOCH


def test_only_empty_label_values_still_create_the_bucket(meta_db: MetadataDB) -> None:
    # containerd's writeMap creates the bucket for a non-empty map, then skips empty values
    store = ImageStore(meta_db)
    created = store.create(NS, image(labels={"gone": ""}), epoch=EPOCH)
    assert record_tree(meta_db, created.name)[b"labels"] == {}
    assert created.labels == {}


def test_create_errors_keep_their_kinds(meta_db: MetadataDB) -> None:
    store = ImageStore(meta_db)
    store.create(NS, image())
    with pytest.raises(AlreadyExists, match='image "docker.io/library/x:1": already exists'):
        store.create(NS, image())
    # a plain key where the record would go is bbolt's incompatible value, not AlreadyExists
    images_bucket_put(meta_db, b"plain", b"v")
    with pytest.raises(bolt.IncompatibleValue):
        store.create(NS, image(name="plain"))
    with pytest.raises(InvalidArgument):
        store.create(NS, image(name="y", digest="sha256:zz"))


def test_update_leaves_the_same_tree_as_a_full_rewrite(meta_db: MetadataDB) -> None:
    store = ImageStore(meta_db)
    created = store.create(NS, image(labels={"a": "1"}, annotations={"x": "y"}), epoch=EPOCH)
    updated = store.update(NS, image(labels={"b": "2"}), ["labels"], epoch=LATER)
    assert record_tree(meta_db, created.name) == {
        b"createdat": codec.encode_time(EPOCH), b"updatedat": codec.encode_time(LATER),
        b"labels": {b"b": b"2"}, b"annotations": {b"x": b"y"},
        b"target": {b"digest": D1.encode(), b"mediatype": MT.encode(), b"size": codec.encode_varint(42)},
    }
    assert updated.created_at == EPOCH and updated.updated_at == LATER
    # a changed target is written; removing every label removes the bucket
    store.update(NS, image(digest=D2, size=7), ["target", "labels"], epoch=LATER)
    tree = record_tree(meta_db, created.name)
    assert tree[b"target"] == {b"digest": D2.encode(), b"mediatype": MT.encode(), b"size": codec.encode_varint(7)}
    # "target" replaced the annotations too (with none: the bucket goes)
    assert b"labels" not in tree and b"annotations" not in tree


def test_update_keeps_unknown_target_keys(meta_db: MetadataDB) -> None:
    # containerd puts its three keys into the existing target bucket; others stay
    store = ImageStore(meta_db)
    created = store.create(NS, image(), epoch=EPOCH)

    def add_key(tx: bolt.Tx) -> None:
        record = tx.bucket(layout.SCHEMA_BUCKET).bucket(NS.encode()).bucket(layout.IMAGES_BUCKET) \
            .bucket(created.name.encode())
        record.bucket(layout.TARGET_BUCKET).put(b"urls", b"kept")
    meta_db.update(add_key)
    store.update(NS, image(digest=D2), ["target"], epoch=LATER)
    assert record_tree(meta_db, created.name)[b"target"][b"urls"] == b"kept"


def test_update_of_a_record_without_createdat_writes_go_zero_time(meta_db: MetadataDB) -> None:
    # containerd reads a missing time as Go's zero time and writes that back
    store = ImageStore(meta_db)
    created = store.create(NS, image(), epoch=EPOCH)

    def drop_createdat(tx: bolt.Tx) -> None:
        tx.bucket(layout.SCHEMA_BUCKET).bucket(NS.encode()).bucket(layout.IMAGES_BUCKET) \
            .bucket(created.name.encode()).delete(layout.CREATED_AT_KEY)
    meta_db.update(drop_createdat)
    store.update(NS, image(labels={"a": "b"}), ["labels"], epoch=LATER)
    assert record_tree(meta_db, created.name)[b"createdat"] == GO_ZERO_TIME


def test_delete_errors(meta_db: MetadataDB) -> None:
    store = ImageStore(meta_db)
    with pytest.raises(NotFound):
        store.delete(NS, "nothing-here")
    images_bucket_put(meta_db, b"plain", b"v")
    # a plain key is no image: NotFound, and the key stays
    with pytest.raises(NotFound, match='image "plain": not found'):
        store.delete(NS, "plain")
    with pytest.raises(NotFound):
        store.delete(NS, "")
    created = store.create(NS, image())
    store.delete(NS, created.name)
    with pytest.raises(NotFound):
        store.get(NS, created.name)
    assert store.list(NS) == []


def test_publish_without_subscribers_still_checks_and_builds_nothing() -> None:
    bus = EventBus()
    event = image_events.ImageCreate(name="x")
    assert bus.publish("ns", "/images/create", event) is None
    with pytest.raises(InvalidArgument, match="namespace validation"):
        bus.publish("bad ns", "/images/create", event)
    with pytest.raises(InvalidArgument, match="envelope topic"):
        bus.publish("ns", "no-slash", event)
    # still refused the second time (only valid names are remembered)
    with pytest.raises(InvalidArgument):
        bus.publish("bad ns", "/images/create", event)
    sub = bus.subscribe()
    envelope = bus.publish("ns", "/images/create", event)
    assert envelope is not None
    received = sub.next(1.0)
    assert received is not None and received.topic == "/images/create" and received.namespace == "ns"
    assert received.event.type_url == image_events.ImageCreate.DESCRIPTOR.full_name
    assert image_events.ImageCreate.FromString(received.event.value) == event
    sub.close()


def test_lone_writer_commits_in_its_own_thread(meta_db: MetadataDB) -> None:
    caller = threading.get_ident()
    seen: list[int] = []
    before = meta_db.batches_committed
    meta_db.batch(lambda tx: seen.append(threading.get_ident()))
    assert seen == [caller]
    assert meta_db.batches_committed == before + 1


def test_finished_writer_does_not_wait_for_the_next_batch(meta_db: MetadataDB) -> None:
    """A queued writer whose call another leader committed returns at once;
    it does not queue for the commit lock behind the next batch."""
    first_started, in_a, in_c, release_c = (threading.Event() for _ in range(4))
    results: dict[str, object] = {}

    def slow_first(tx: bolt.Tx) -> None:  # lone writer: holds the lock while A and B queue
        first_started.set()
        assert wait_until(lambda: len(meta_db._queue) >= 2)

    def a(tx: bolt.Tx) -> str:  # leads the batch [A, B]; C queues meanwhile
        in_a.set()
        assert wait_until(lambda: len(meta_db._queue) >= 1)
        return "a"

    def c(tx: bolt.Tx) -> str:
        in_c.set()
        release_c.wait(10)
        return "c"

    def run(name: str, fn) -> threading.Thread:
        thread = threading.Thread(target=lambda: results.__setitem__(name, meta_db.batch(fn)))
        thread.start()
        return thread

    t0 = run("first", slow_first)
    assert first_started.wait(10)
    ta = run("a", a)
    assert wait_until(lambda: len(meta_db._queue) == 1)
    tb = run("b", lambda tx: "b")
    assert in_a.wait(10)
    tc = run("c", c)
    assert in_c.wait(10)
    # C's batch is running and cannot finish yet: B, committed with A, is back already
    tb.join(5)
    assert not tb.is_alive() and results.get("b") == "b"
    release_c.set()
    for thread in (t0, ta, tc):
        thread.join(10)
    assert results == {"first": None, "a": "a", "b": "b", "c": "c"}
