"""Random Images API sessions, replayed against a private containerd 1.6.20
and our servicer (in-process gRPC server over our own file).

Every response must match (status code, message, and the response with
server-set times removed), and at the end the images subtrees of the two
meta.db files must hold the same buckets, keys and values (times aside):
same labels/annotations buckets, same empty buckets, same varints.
"""

from __future__ import annotations

import pathlib
import random
import shutil
from concurrent import futures

import grpc
import pytest
from google.protobuf import field_mask_pb2, json_format

from boltimages import bolt
from boltimages.api.containerd.services.images.v1 import images_pb2 as pb, images_pb2_grpc
from boltimages.server.images_service import ImagesServicer, add_to_server
from boltimages.store.db import MetadataDB
from tests.compat.daemons import DaemonError, containerd_daemon, containerd_meta_db
from tests.helpers import require_root, require_tool, slow_budget

pytestmark = [pytest.mark.compat, pytest.mark.root]

NAMES = ["docker.io/library/a:1", "docker.io/library/b:2", "example.com/c", "d", "e@sha256:x"]
DIGESTS = ["sha256:" + "ab" * 32, "sha256:" + "cd" * 32, "sha512:" + "ef" * 64, "sha256:short", "bogus"]
MEDIA = ["application/vnd.oci.image.manifest.v1+json", "application/vnd.oci.image.index.v1+json", ""]
KEYS = ["a", "b", "x.y", "containerd.io/gc.ref", "k"]
VALUES = ["1", "2", "", "v" * 10]
PATHS = ["labels", "target", "annotations", "labels.a", "labels.b", "labels.x.y", "annotations.a",
         "annotations.k", "name", "target.digest"]
FILTERS = ["", "name~=library", "labels.a", "labels.a==1", "labels.b!=2", "annotations.k", "target.digest~=^sha512",
           "name==d", "labels.x.y==v", "bad=="]


def random_image(rng: random.Random) -> pb.Image:
    img = pb.Image(name=rng.choice(NAMES + [""]) if rng.random() < 0.05 else rng.choice(NAMES))
    for _ in range(rng.randint(0, 3)):
        img.labels[rng.choice(KEYS)] = rng.choice(VALUES)
    img.target.digest = rng.choice(DIGESTS[:3]) if rng.random() < 0.9 else rng.choice(DIGESTS)
    img.target.media_type = rng.choice(MEDIA[:2]) if rng.random() < 0.95 else ""
    img.target.size = rng.choice([1, 123, 2**40]) if rng.random() < 0.95 else rng.choice([0, -5])
    for _ in range(rng.randint(0, 2)):
        img.target.annotations[rng.choice(KEYS)] = rng.choice(VALUES)
    return img


def random_call(rng: random.Random) -> tuple[str, object]:
    kind = rng.choices(["Create", "Update", "Delete", "Get", "List"], [4, 4, 2, 1, 2])[0]
    if kind == "Create":
        return kind, pb.CreateImageRequest(image=random_image(rng))
    if kind == "Update":
        req = pb.UpdateImageRequest(image=random_image(rng))
        if rng.random() < 0.7:
            req.update_mask.CopyFrom(field_mask_pb2.FieldMask(paths=rng.sample(PATHS, rng.randint(1, 3))))
        return kind, req
    if kind == "Delete":
        return kind, pb.DeleteImageRequest(name=rng.choice(NAMES))
    if kind == "Get":
        return kind, pb.GetImageRequest(name=rng.choice(NAMES))
    return kind, pb.ListImagesRequest(filters=rng.sample(FILTERS, rng.randint(0, 2)))


def strip_times(message) -> dict:
    data = json_format.MessageToDict(message)
    images = data.get("images") or ([data["image"]] if "image" in data else [])
    for image in images:
        image.pop("createdAt", None)
        image.pop("updatedAt", None)
    return data


def invoke(stub, kind: str, request, ns: str) -> tuple:
    try:
        response = getattr(stub, kind)(request, metadata=[("containerd-namespace", ns)], timeout=10)
    except grpc.RpcError as exc:
        return exc.code().name, exc.details()
    return "OK", strip_times(response)


def images_tree(path: pathlib.Path, ns: bytes) -> list[tuple]:
    rows: list[tuple] = []

    def walk(bucket, prefix):
        for key, value in bucket.items():
            if value is None:
                rows.append((prefix + (key,), None))
                walk(bucket.bucket(key), prefix + (key,))
            else:
                timeish = key in (b"createdat", b"updatedat") and len(prefix) == 1
                rows.append((prefix, key, len(value) if timeish else value))
    with bolt.open(path, read_only=True) as db, db.begin() as tx:
        images = tx.bucket(b"v1").bucket(ns).bucket(b"images")
        if images is not None:
            walk(images, ())
    return rows


def test_random_sessions_match_containerd(tmp_path: pathlib.Path) -> None:
    require_root()
    root = tmp_path / "root"
    daemon = containerd_daemon(require_tool("containerd"), tmp_path / "ctd", root)
    try:
        daemon.start()
    except DaemonError as exc:
        pytest.fail(str(exc), pytrace=False)
    ours_path = tmp_path / "ours.db"
    db = MetadataDB(ours_path)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    add_to_server(ImagesServicer(db, lambda *event: None), server)
    server.add_insecure_port(f"unix://{tmp_path}/ours.sock")
    server.start()
    sessions = max(1, slow_budget(3))
    try:
        with grpc.insecure_channel(f"unix://{daemon.address}") as real_ch, \
                grpc.insecure_channel(f"unix://{tmp_path}/ours.sock") as our_ch:
            real, ours = images_pb2_grpc.ImagesStub(real_ch), images_pb2_grpc.ImagesStub(our_ch)
            for session in range(sessions):
                rng = random.Random(1000 + session)
                ns = f"random{session}"
                for step in range(150):
                    kind, request = random_call(rng)
                    want = invoke(real, kind, request, ns)
                    got = invoke(ours, kind, request, ns)
                    assert got == want, f"session {session} step {step}: {kind} {request}"
    finally:
        server.stop(None)
        db.close()
        daemon.stop()
    theirs_path = tmp_path / "theirs.db"
    shutil.copy(containerd_meta_db(root), theirs_path)
    for session in range(sessions):
        ns = f"random{session}".encode()
        assert images_tree(ours_path, ns) == images_tree(theirs_path, ns)
