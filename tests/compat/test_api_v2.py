"""Calls whose answers changed after 1.6, against a real containerd 2.1.9: Images/Delete's
target check and Introspection/Server (which ctr 1.7/2.x call before every command)."""

from __future__ import annotations

from typing import Iterator

import pytest
from google.protobuf import empty_pb2

from tests.compat.releases import BY_VERSION
from tests.compat.conftest import real_and_our_clients
from tests.compat.grpc_client import Client, api

pytestmark = pytest.mark.compat

DIGEST = "sha256:" + "ab" * 32
OTHER = "sha256:" + "cd" * 32


@pytest.fixture(scope="module")
def clients(tmp_path_factory) -> Iterator[dict[str, Client]]:
    release = BY_VERSION["2.1.9"].require()
    base = tmp_path_factory.mktemp("api-v2")
    with real_and_our_clients(release, base) as clients:
        yield clients


def _create(client: Client, name: str) -> None:
    pb = client.images_pb2
    target = client.descriptor_pb2.Descriptor(media_type="application/vnd.oci.image.manifest.v1+json",
                                              digest=DIGEST, size=10)
    assert client.call(client.images.Create, pb.CreateImageRequest(image=pb.Image(name=name, target=target))).ok


@pytest.mark.parametrize("target", [None, DIGEST, OTHER, ""], ids=["no-target", "match", "mismatch", "empty"])
def test_delete_target_check(clients: dict[str, Client], target) -> None:
    got = {}
    for side, client in clients.items():
        name = f"docker.io/library/del-{target or 'none'}:1"
        _create(client, name)
        request = client.images_pb2.DeleteImageRequest(name=name)
        if target is not None:
            request.target.CopyFrom(client.descriptor_pb2.Descriptor(digest=target))
        first = client.call(client.images.Delete, request)
        left = client.call(client.images.Get, client.images_pb2.GetImageRequest(name=name))
        got[side] = (str(first), left.code)
    assert got["ours"] == got["real"]
    if target == OTHER:
        assert got["ours"][0].startswith("NOT_FOUND")


def test_introspection_server_has_containerd_shape(clients: dict[str, Client]) -> None:
    pb, grpc_mod = api("services.introspection.v1.introspection_pb2"), api("services.introspection.v1.introspection_pb2_grpc")
    got = {}
    for side, client in clients.items():
        for header in ("default", None):
            out = client.call(grpc_mod.IntrospectionStub(client.channel).Server, empty_pb2.Empty(), namespace=header)
            assert out.ok, (side, out)
            fields = sorted(f.name for f, _ in out.response.ListFields())
            got.setdefault(side, []).append((fields, len(out.response.deprecations)))
            assert len(out.response.uuid) == 36 and out.response.pid > 0 and out.response.pidns > 0
    assert got["ours"] == got["real"]
    assert pb.ServerResponse.DESCRIPTOR.fields_by_name["deprecations"].number == 4
