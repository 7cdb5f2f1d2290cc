"""Snapshot kinds read from the snapshotter's own file, against real containerd 1.6.20, 1.7.24 and 2.1.9.

A real release unpacks a real OCI archive (committed layers) and makes an
active and a view snapshot; both servers then run on copies of that root and
must answer Snapshots List/Stat, with and without kind filters, and
`ctr snapshots ls` / `info` exactly alike. One record's backend entry is
removed from the snapshotter's file in both copies: containerd leaves it out
of List and fails its Stat, and so must we.
"""

from __future__ import annotations

from typing import Iterator

import grpc
import pytest
from google.protobuf import json_format

from boltimages import bolt
from tests.compat.ctr_runner import Ctr
from tests.compat.releases import BY_VERSION, RELEASES
from tests.compat.conftest import real_and_ours, seeded_root
from tests.compat.daemons import Daemon
from tests.compat.grpc_client import Client, api
from tests.compat.oci_archive import build_image, write_archive

pytestmark = pytest.mark.compat

SNAPSHOTTER = "overlayfs"
GONE = "gone1"   # a view whose backend entry is deleted from the snapshotter's file


def _drop_backend(root, key: str) -> None:
    """Delete ``key``'s record from the snapshotter's file (containerd stopped)."""
    with bolt.open(root / f"io.containerd.snapshotter.v1.{SNAPSHOTTER}" / "metadata.db", create=False) as db:
        def write(tx):
            snapshots = tx.bucket(b"v1").bucket(b"snapshots")
            backend = next(k for k, v in snapshots.items() if v is None and k.endswith(b"/" + key.encode()))
            snapshots.delete_bucket(backend)
        db.update(write)


class Sides:
    def __init__(self, real: Daemon, ours: Daemon, ctr: str) -> None:
        self.daemons = {"real": real, "ours": ours}
        self.clients = {side: Client(d.address) for side, d in self.daemons.items()}
        self.ctrs = {side: Ctr(ctr, d.address) for side, d in self.daemons.items()}


@pytest.fixture(scope="module", params=[r.version for r in RELEASES])
def sides(request, tmp_path_factory) -> Iterator[Sides]:
    release = BY_VERSION[request.param].require()
    base = tmp_path_factory.mktemp("kinds")
    ctr = release.ctr
    archive = write_archive(base / "img.tar", [build_image("docker.io/library/k:1", "k")])
    def seed(daemon: Daemon) -> None:
        run = Ctr(ctr, daemon.address)
        run("images", "import", str(archive)).ok()      # unpacks: committed layer snapshots
        run("snapshots", "prepare", "base1", "").ok()
        run("snapshots", "commit", "c1", "base1").ok()
        run("snapshots", "prepare", "act1", "c1").ok()
        run("snapshots", "label", "act1", "team=x").ok()
        # ctr's view sets no gc.root label, so containerd's collector removes the
        # view within milliseconds; made through the API with one, they stay
        seed_client = Client(daemon.address)
        try:
            pb, stub = _snapshots_api(seed_client)
            for key in ("view1", GONE):
                stub.View(pb.ViewSnapshotRequest(snapshotter=SNAPSHOTTER, key=key, parent="c1",
                                                 labels={"containerd.io/gc.root": "compat"}),
                          metadata=[("containerd-namespace", "default")], timeout=10)
        finally:
            seed_client.close()

    with real_and_ours(release, base, seeded_root(release, base, seed),
                       prepare=lambda root: _drop_backend(root, GONE)) as (real, ours):
        out = Sides(real, ours, ctr)
        yield out
        for client in out.clients.values():
            client.close()


def _snapshots_api(client: Client):
    pb = api("services.snapshots.v1.snapshots_pb2")
    return pb, api("services.snapshots.v1.snapshots_pb2_grpc").SnapshotsStub(client.channel)


def _list(client: Client, filters: list[str]) -> tuple[str, list]:
    pb, stub = _snapshots_api(client)
    try:
        infos = [json_format.MessageToDict(i) for r in stub.List(
            pb.ListSnapshotsRequest(snapshotter=SNAPSHOTTER, filters=filters),
            metadata=[("containerd-namespace", "default")], timeout=10) for i in r.info]
        return "OK", infos
    except grpc.RpcError as err:
        return err.code().name, [err.details()]


@pytest.mark.parametrize("filters", [[], ["kind==active"], ["kind==view"], ["kind==committed"],
                                     ['kind!=committed'], ["parent==c1"], ["labels.team==x"],
                                     ["kind==unknown"], ['kind~="^(active|view)$"']],
                         ids=lambda f: ",".join(f) or "all")
def test_list_with_kinds(sides: Sides, filters) -> None:
    got = {side: _list(client, filters) for side, client in sides.clients.items()}
    assert got["ours"] == got["real"]
    assert got["ours"][0] == "OK"
    if not filters:
        kinds = {i["name"]: i.get("kind", "UNKNOWN") for i in got["ours"][1]}
        assert (kinds["act1"], kinds["view1"], kinds["c1"]) == ("ACTIVE", "VIEW", "COMMITTED")
        assert GONE not in kinds


@pytest.mark.parametrize("key", ["act1", "view1", "c1", GONE, "missing"])
def test_stat(sides: Sides, key: str) -> None:
    got = {}
    for side, client in sides.clients.items():
        pb, stub = _snapshots_api(client)
        try:
            got[side] = json_format.MessageToDict(stub.Stat(
                pb.StatSnapshotRequest(snapshotter=SNAPSHOTTER, key=key),
                metadata=[("containerd-namespace", "default")], timeout=10))
        except grpc.RpcError as err:
            got[side] = err.code().name
    if key == GONE:
        # containerd passes its snapshotter's error on (naming the backend key); we say the
        # snapshot does not exist: the same code
        assert got["ours"] == got["real"] == "NOT_FOUND"
    else:
        assert got["ours"] == got["real"]


def test_ctr_snapshots_ls_and_info(sides: Sides) -> None:
    for args in (("snapshots", "ls"), ("snapshots", "info", "act1"), ("snapshots", "info", "view1")):
        got = {side: ctr(*args) for side, ctr in sides.ctrs.items()}
        assert (got["ours"].rc, got["ours"].stdout) == (got["real"].rc, got["real"].stdout), args
    listing = sides.ctrs["ours"]("snapshots", "ls").ok().stdout
    assert any(line.split()[:3] == ["act1", "c1", "Active"] for line in listing.splitlines())
