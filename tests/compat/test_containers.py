"""Containers (read-only) against real containerd 1.6.20, 1.7.24 and 2.1.9, on copies of one root.

A real release writes the records: `ctr containers create` from an imported
image, and Containers/Create through the API with runtime options, spec,
extensions (one empty), a sandbox id, labels, and bare records. Both servers
must answer Get, List and ListStream with the same messages (compared after
a deterministic re-encoding: Go orders map entries at random on the wire),
the same errors and filter results, and `ctr containers ls/info` must print
the same. Writes are refused by us with Unimplemented.
"""

from __future__ import annotations

from typing import Iterator

import grpc
import pytest
from google.protobuf import any_pb2

from tests.compat.ctr_runner import Ctr
from tests.compat.releases import BY_VERSION, RELEASES
from tests.compat.conftest import real_and_ours, seeded_root
from tests.compat.daemons import Daemon
from tests.compat.grpc_client import Client, api
from tests.compat.oci_archive import build_image, write_archive

pytestmark = pytest.mark.compat

IMAGE = "docker.io/library/c:1"
SERVICE = "/containerd.services.containers.v1.Containers/"


def _pb():
    return api("services.containers.v1.containers_pb2")


def _seed(client: Client, version: str) -> None:
    pb = _pb()
    stub = api("services.containers.v1.containers_pb2_grpc").ContainersStub(client.channel)
    C = pb.Container
    records = [
        (C(id="api-full", labels={"a": "b", "team": "y"}, image="img:1",
           runtime=C.Runtime(name="io.containerd.runc.v2", options=any_pb2.Any(type_url="x/y", value=b"\x01")),
           spec=any_pb2.Any(type_url="types.containerd.io/opencontainers/runtime-spec/1/Spec", value=b"{}"),
           snapshotter="overlayfs", snapshot_key="k2",
           extensions={"ext1": any_pb2.Any(type_url="e/1", value=b"v"), "ext2": any_pb2.Any()}, sandbox="sb1"),
         "default"),
        (C(id="api-bare", runtime=C.Runtime(name="r")), "default"),
        (C(id="api-spec-only", runtime=C.Runtime(name="r"), spec=any_pb2.Any(type_url="s")), "default"),
        (C(id="other-ns", runtime=C.Runtime(name="r"), labels={"x": "1"}), "second"),
    ]
    for container, ns in records:
        if version.startswith("1.6.") and not container.HasField("spec"):
            container.spec.type_url = "s"   # 1.6 refuses a container without a spec (1.7 dropped the check)
        out = client.call(stub.Create, pb.CreateContainerRequest(container=container), namespace=ns)
        assert out.ok, out


@pytest.fixture(scope="module", params=[r.version for r in RELEASES])
def sides(request, tmp_path_factory) -> Iterator[dict]:
    release = BY_VERSION[request.param].require()
    base = tmp_path_factory.mktemp("containers")
    ctr = release.ctr
    archive = write_archive(base / "img.tar", [build_image(IMAGE, "c")])
    def seed(daemon: Daemon) -> None:
        run = Ctr(ctr, daemon.address)
        run("images", "import", str(archive)).ok()
        run("containers", "create", "--label", "team=x", IMAGE, "ctr-made").ok()
        client = Client(daemon.address)
        try:
            _seed(client, request.param)
        finally:
            client.close()

    with real_and_ours(release, base, seeded_root(release, base, seed)) as (real, ours):
        out = {"real": (Client(real.address), Ctr(ctr, real.address)),
               "ours": (Client(ours.address), Ctr(ctr, ours.address))}
        yield out
        for client, _ in out.values():
            client.close()


def _call(client: Client, method: str, request, response_cls, ns="default", stream=False):
    """(status, [deterministic re-encodings of the answers]) for a raw call."""
    metadata = [] if ns is None else [("containerd-namespace", ns)]
    make = client.channel.unary_stream if stream else client.channel.unary_unary
    call = make(SERVICE + method, request_serializer=None, response_deserializer=None)
    try:
        answers = list(call(request.SerializeToString(), metadata=metadata, timeout=10)) if stream \
            else [call(request.SerializeToString(), metadata=metadata, timeout=10)]
    except grpc.RpcError as err:
        return err.code().name, err.details()
    return "OK", [response_cls.FromString(a).SerializeToString(deterministic=True) for a in answers]


@pytest.mark.parametrize("cid,ns", [("ctr-made", "default"), ("api-full", "default"), ("api-bare", "default"),
                                    ("api-spec-only", "default"), ("other-ns", "second"), ("other-ns", "default"),
                                    ("missing", "default"), ("", "default"), ("api-full", None),
                                    ("api-full", "bad ns")])
def test_get(sides: dict, cid: str, ns) -> None:
    pb = _pb()
    got = {side: _call(client, "Get", pb.GetContainerRequest(id=cid), pb.GetContainerResponse, ns)
           for side, (client, _) in sides.items()}
    assert got["ours"] == got["real"]


FILTERS = [[], ["id==api-full"], ["labels.team==x"], ['labels.team~="^[xy]$"'], ["image==img:1"],
           ["runtime.name==r"], ["runtime.name"], ["runtime"], ["snapshotter==overlayfs"], ["labels.a"],
           ["id==api-bare", "image==img:1"], ["labels.team==x,image==" + IMAGE], ["id=="], ["!!bad"],
           ['id~="("']]


@pytest.mark.parametrize("filters", FILTERS, ids=lambda f: "|".join(f) or "all")
@pytest.mark.parametrize("stream", [False, True], ids=["List", "ListStream"])
def test_list(sides: dict, filters, stream: bool) -> None:
    pb = _pb()
    method, cls = ("ListStream", pb.ListContainerMessage) if stream else ("List", pb.ListContainersResponse)
    got = {side: _call(client, method, pb.ListContainersRequest(filters=filters), cls, stream=stream)
           for side, (client, _) in sides.items()}
    assert got["ours"] == got["real"]
    if not filters:
        assert got["ours"][0] == "OK" and got["ours"][1]


@pytest.mark.parametrize("ns", ["second", "empty-ns", "", "bad ns"])
def test_list_other_namespaces(sides: dict, ns: str) -> None:
    pb = _pb()
    got = {side: _call(client, "List", pb.ListContainersRequest(), pb.ListContainersResponse, ns)
           for side, (client, _) in sides.items()}
    assert got["ours"] == got["real"]


def test_ctr_containers_ls_and_info(sides: dict) -> None:
    for args in (("containers", "ls"), ("containers", "ls", "-q"), ("containers", "info", "ctr-made"),
                 ("containers", "info", "api-full"), ("containers", "ls", "labels.team==x"),
                 ("containers", "info", "missing")):
        got = {side: ctr(*args) for side, (_, ctr) in sides.items()}
        assert (got["ours"].rc, got["ours"].stdout, got["ours"].stderr) == \
            (got["real"].rc, got["real"].stdout, got["real"].stderr), args


def test_writes_are_refused(sides: dict) -> None:
    pb = _pb()
    client, ctr = sides["ours"]
    for method, request in (("Create", pb.CreateContainerRequest(container=pb.Container(id="n", runtime=pb.Container.Runtime(name="r")))),
                            ("Update", pb.UpdateContainerRequest(container=pb.Container(id="api-bare"))),
                            ("Delete", pb.DeleteContainerRequest(id="api-bare"))):
        code, details = _call(client, method, request, pb.ListContainersResponse)
        assert code == "UNIMPLEMENTED" and "read-only" in details and "real containerd" in details
    result = ctr("containers", "rm", "api-bare")
    assert result.rc != 0 and "real containerd" in result.stderr, result.stderr
    assert "api-bare" in ctr("containers", "ls", "-q").ok().stdout
