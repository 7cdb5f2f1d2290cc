"""ImagesServicer in a real in-process gRPC server over a real file: status
codes, namespace handling, masks, 2.x fields and published events."""

from __future__ import annotations

import pathlib
from concurrent import futures
from typing import Iterator

import grpc
import pytest
from google.protobuf import field_mask_pb2, timestamp_pb2

from boltimages.api.containerd.events import image_pb2 as events_pb2
from boltimages.api.containerd.services.images.v1 import images_pb2 as pb, images_pb2_grpc
from boltimages.server.images_service import ImagesServicer, add_to_server
from boltimages.store.db import MetadataDB

D1 = "sha256:" + "11" * 32
D2 = "sha256:" + "22" * 32
MT = "application/vnd.oci.image.manifest.v1+json"


class Env:
    def __init__(self, tmp: pathlib.Path) -> None:
        self.db = MetadataDB(tmp / "meta.db")
        self.events: list[tuple] = []
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        add_to_server(
            ImagesServicer(self.db, lambda ns, topic, ev: self.events.append((ns, topic, ev() if callable(ev) else ev))),
            self.server)
        sock = f"unix://{tmp}/images.sock"
        self.server.add_insecure_port(sock)
        self.server.start()
        self.channel = grpc.insecure_channel(sock)
        self.stub = images_pb2_grpc.ImagesStub(self.channel)

    def call(self, method: str, request, ns="default", lease=None):
        md = [] if ns is None else [("containerd-namespace", ns)]
        if lease:
            md.append(("containerd-lease", lease))
        return getattr(self.stub, method)(request, metadata=md, timeout=10)

    def error(self, method: str, request, ns="default") -> tuple:
        with pytest.raises(grpc.RpcError) as info:
            self.call(method, request, ns)
        return info.value.code(), info.value.details()

    def close(self) -> None:
        self.channel.close()
        self.server.stop(None)
        self.db.close()


@pytest.fixture
def env(tmp_path: pathlib.Path) -> Iterator[Env]:
    e = Env(tmp_path)
    yield e
    e.close()


def img(name="docker.io/library/x:1", digest=D1, labels=None, ann=None, size=123) -> pb.Image:
    out = pb.Image(name=name)
    out.labels.update(labels or {})
    out.target.media_type, out.target.digest, out.target.size = MT, digest, size
    out.target.annotations.update(ann or {})
    return out


def test_status_codes(env: Env) -> None:
    C = grpc.StatusCode
    env.call("Create", pb.CreateImageRequest(image=img()))
    assert env.error("Create", pb.CreateImageRequest(image=img())) == (
        C.ALREADY_EXISTS, 'image "docker.io/library/x:1": already exists')
    # containerd checks the name before the namespace
    assert env.error("Create", pb.CreateImageRequest(image=img(name="")), ns=None) == (
        C.INVALID_ARGUMENT, "Image.Name required")
    assert env.error("Create", pb.CreateImageRequest(image=img()), ns=None) == (
        C.FAILED_PRECONDITION, "namespace is required: failed precondition")
    assert env.error("Get", pb.GetImageRequest(name="x"), ns="") == (
        C.FAILED_PRECONDITION, "namespace is required: failed precondition")
    code, text = env.error("List", pb.ListImagesRequest(), ns="a--b")
    assert code == C.INVALID_ARGUMENT and text.startswith('namespace validation: identifier "a--b" must match')
    assert env.error("Get", pb.GetImageRequest(name="nope")) == (C.NOT_FOUND, 'image "nope": not found')
    assert env.error("Delete", pb.DeleteImageRequest(name="nope")) == (C.NOT_FOUND, 'image "nope": not found')
    assert env.error("Update", pb.UpdateImageRequest(image=img(name="")), ns=None) == (
        C.INVALID_ARGUMENT, "Image.Name required")
    assert env.error("Update", pb.UpdateImageRequest(
        image=img(), update_mask=field_mask_pb2.FieldMask(paths=["name"]))) == (
        C.INVALID_ARGUMENT, 'cannot update "name" field on image "docker.io/library/x:1": invalid argument')
    assert env.error("Create", pb.CreateImageRequest(image=img("s", size=0)))[0] == C.INVALID_ARGUMENT
    assert env.error("List", pb.ListImagesRequest(filters=["name=="]))[0] == C.INVALID_ARGUMENT


def test_round_trip_masks_and_events(env: Env) -> None:
    created = env.call("Create", pb.CreateImageRequest(image=img(labels={"a": "b"}, ann={"k": "v"}))).image
    assert created.created_at == created.updated_at and created.created_at.seconds > 0
    got = env.call("Get", pb.GetImageRequest(name=created.name)).image
    assert got == created
    upd = env.call("Update", pb.UpdateImageRequest(
        image=img(labels={"c": "d"}), update_mask=field_mask_pb2.FieldMask(paths=["labels.c"]))).image
    assert dict(upd.labels) == {"a": "b", "c": "d"} and upd.created_at == created.created_at
    assert dict(upd.target.annotations) == {"k": "v"}
    listed = env.call("List", pb.ListImagesRequest(filters=["labels.c==d"])).images
    assert [i.name for i in listed] == [created.name]
    env.call("Delete", pb.DeleteImageRequest(name=created.name, sync=True))
    assert [(ns, topic) for ns, topic, _ in env.events] == [
        ("default", "/images/create"), ("default", "/images/update"), ("default", "/images/delete")]
    assert isinstance(env.events[0][2], events_pb2.ImageCreate)
    assert env.events[0][2].name == created.name and dict(env.events[0][2].labels) == {"a": "b"}
    assert dict(env.events[1][2].labels) == {"a": "b", "c": "d"}
    assert env.events[2][2] == events_pb2.ImageDelete(name=created.name)


def test_containerd_2x_fields(env: Env) -> None:
    epoch = timestamp_pb2.Timestamp(seconds=1700000000, nanos=42)
    created = env.call("Create", pb.CreateImageRequest(image=img(), source_date_epoch=epoch)).image
    assert created.created_at == epoch and created.updated_at == epoch
    later = timestamp_pb2.Timestamp(seconds=1800000000)
    upd = env.call("Update", pb.UpdateImageRequest(image=img(), source_date_epoch=later)).image
    assert upd.created_at == epoch and upd.updated_at == later
    # Delete with a target: containerd 2.x answers NotFound when the digest differs
    wrong = pb.DeleteImageRequest(name=created.name)
    wrong.target.digest = D2
    code, text = env.error("Delete", wrong)
    assert code == grpc.StatusCode.NOT_FOUND and f"has target {D1}, not {D2}" in text
    right = pb.DeleteImageRequest(name=created.name)
    right.target.digest = D1
    env.call("Delete", right)
    assert env.error("Get", pb.GetImageRequest(name=created.name))[0] == grpc.StatusCode.NOT_FOUND


def test_zero_time_for_records_without_times(env: Env) -> None:
    env.call("Create", pb.CreateImageRequest(image=img()))
    env.db.update(lambda tx: tx.bucket(b"v1").bucket(b"default").bucket(b"images")
                  .bucket(b"docker.io/library/x:1").delete(b"createdat"))
    got = env.call("Get", pb.GetImageRequest(name="docker.io/library/x:1")).image
    assert got.created_at.seconds == -62135596800  # Go's zero time, as containerd returns it
