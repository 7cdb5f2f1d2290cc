"""Byte-level interoperability with a real containerd 1.6.20.

1. containerd writes images through its Images API; we read its meta.db and
   must see exactly what its API returns (times to the nanosecond).
2. We write images into a fresh file; containerd started on that file must
   serve them unchanged and be able to update and delete them.
"""

from __future__ import annotations

import pathlib
import shutil

import grpc
import pytest
from google.protobuf import field_mask_pb2

from boltimages.api.containerd.services.images.v1 import images_pb2 as pb, images_pb2_grpc
from boltimages.server.images_service import image_to_proto
from boltimages.store import codec
from boltimages.store.db import MetadataDB
from boltimages.store.images import Descriptor, Image, ImageStore
from tests.compat.daemons import DaemonError, containerd_daemon, containerd_meta_db
from tests.helpers import require_root, require_tool

pytestmark = [pytest.mark.compat, pytest.mark.root]

MT = "application/vnd.oci.image.manifest.v1+json"
D1 = "sha256:" + "ab" * 32


def start(tmp: pathlib.Path, name: str, root: pathlib.Path):
    containerd = require_tool("containerd")
    require_root()
    daemon = containerd_daemon(containerd, tmp / name, root)
    try:
        daemon.start()
    except DaemonError as exc:
        pytest.fail(str(exc), pytrace=False)
    return daemon


def stub(daemon) -> tuple[grpc.Channel, images_pb2_grpc.ImagesStub]:
    channel = grpc.insecure_channel(f"unix://{daemon.address}")
    return channel, images_pb2_grpc.ImagesStub(channel)


NS = [("containerd-namespace", "compat")]


def test_we_read_what_containerd_wrote(tmp_path: pathlib.Path) -> None:
    root = tmp_path / "root"
    daemon = start(tmp_path, "ctd", root)
    try:
        channel, images = stub(daemon)
        with channel:
            for i, labels in enumerate([{}, {"a": "b", "long": "x" * 3000}, {"containerd.io/x": "1"}]):
                req = pb.CreateImageRequest(image=pb.Image(name=f"docker.io/library/img:{i}"))
                req.image.labels.update(labels)
                req.image.target.media_type, req.image.target.digest = MT, D1
                req.image.target.size = 10**i * 123 + i
                req.image.target.annotations.update({"org.opencontainers.image.ref.name": str(i)} if i else {})
                images.Create(req, metadata=NS, timeout=10)
            images.Update(pb.UpdateImageRequest(
                image=pb.Image(name="docker.io/library/img:1", labels={"c": "d"}),
                update_mask=field_mask_pb2.FieldMask(paths=["labels.c", "labels.a"])), metadata=NS, timeout=10)
            theirs = list(images.List(pb.ListImagesRequest(), metadata=NS, timeout=10).images)
    finally:
        daemon.stop()
    copy = tmp_path / "copy.db"
    shutil.copy(containerd_meta_db(root), copy)
    with MetadataDB(copy) as db:
        assert db.db_version() == 3
        ours = [image_to_proto(i) for i in ImageStore(db).list("compat")]
    assert ours == theirs
    assert len(ours) == 3


def test_containerd_reads_what_we_wrote(tmp_path: pathlib.Path) -> None:
    root = tmp_path / "root"
    path = containerd_meta_db(root)
    path.parent.mkdir(parents=True)
    with MetadataDB(path) as db:
        store = ImageStore(db)
        written = [
            store.create("compat", Image(name="a", target=Descriptor(MT, D1, 1))),
            store.create("compat", Image(name="b", labels={"k": "v"},
                                         target=Descriptor(MT, D1, 2**40, {"ann": "x"})),
                         epoch=codec.Timestamp(1700000000, 123456789)),
        ]
        written[1] = store.update("compat", Image(name="b", labels={"k2": "v2"}), ["labels.k2"])
    daemon = start(tmp_path, "ctd", root)
    try:
        channel, images = stub(daemon)
        with channel:
            theirs = list(images.List(pb.ListImagesRequest(), metadata=NS, timeout=10).images)
            assert theirs == [image_to_proto(i) for i in written]
            # containerd can change and delete our records
            images.Update(pb.UpdateImageRequest(
                image=pb.Image(name="a", labels={"by": "containerd"}),
                update_mask=field_mask_pb2.FieldMask(paths=["labels"])), metadata=NS, timeout=10)
            images.Delete(pb.DeleteImageRequest(name="b"), metadata=NS, timeout=10)
    finally:
        daemon.stop()
    with MetadataDB(path) as db:
        left = ImageStore(db).list("compat")
        assert [(i.name, i.labels) for i in left] == [("a", {"by": "containerd"})]
        assert db.db_version() == 3  # 1.6 keeps the version we initialised


def test_round_trip_through_both(tmp_path: pathlib.Path, oracle) -> None:
    """containerd writes, we change its file in place (real bbolt must find it
    clean), containerd restarted on it serves exactly our state."""
    root = tmp_path / "root"
    daemon = start(tmp_path, "ctd1", root)
    try:
        channel, images = stub(daemon)
        with channel:
            for i in range(20):
                req = pb.CreateImageRequest(image=pb.Image(name=f"example.com/r:{i}", labels={"i": str(i)}))
                req.image.target.media_type, req.image.target.digest, req.image.target.size = MT, D1, i + 1
                images.Create(req, metadata=NS, timeout=10)
    finally:
        daemon.stop()
    path = containerd_meta_db(root)
    with MetadataDB(path) as db:
        store = ImageStore(db)
        for i in range(0, 20, 2):
            store.delete("compat", f"example.com/r:{i}")
        for i in range(1, 20, 4):
            store.update("compat", Image(name=f"example.com/r:{i}", labels={"by": "us"}), ["labels.by"])
        store.create("compat", Image(name="example.com/new", target=Descriptor(MT, D1, 7, {"a": "b"})))
        expected = [image_to_proto(i) for i in store.list("compat")]
    assert oracle.check(path) == []
    daemon = start(tmp_path, "ctd2", root)
    try:
        channel, images = stub(daemon)
        with channel:
            theirs = list(images.List(pb.ListImagesRequest(), metadata=NS, timeout=10).images)
    finally:
        daemon.stop()
    assert theirs == expected and len(theirs) == 11
