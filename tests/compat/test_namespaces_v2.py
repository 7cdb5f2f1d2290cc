"""Namespaces as containerd 1.7.24 and 2.1.9 answer them: header cases, events under the namespace's own name.

1.6 publishes /namespaces/create and /namespaces/update under the caller's
namespace (and fails a call that has none, with Unknown); 1.7 and 2.x publish
them under the namespace's own name, so create/update work with no header or
a malformed one. We follow 2.x. One deliberate difference: an Update naming an
invalid identifier is refused before anything is written (2.x writes the
labels, then fails publishing the event): same code, nothing written.
"""

from __future__ import annotations

from typing import Iterator

import pytest

from tests.compat.releases import BY_VERSION, RELEASES
from tests.compat.conftest import real_and_our_clients
from tests.compat.grpc_client import Client
from tests.compat.test_events_differential import Subscription

pytestmark = pytest.mark.compat

INVALID = "Bad Name"


@pytest.fixture(scope="module", params=[r.version for r in RELEASES if not r.system])
def clients(request, tmp_path_factory) -> Iterator[dict[str, Client]]:
    """1.7 and 2.x answer every case here alike (and unlike 1.6)."""
    release = BY_VERSION[request.param].require()
    base = tmp_path_factory.mktemp("ns-v2")
    with real_and_our_clients(release, base) as clients:
        yield clients


def _create(client: Client, name: str, header, labels=None):
    pb = client.namespaces_pb2
    return client.call(client.namespaces.Create,
                       pb.CreateNamespaceRequest(namespace=pb.Namespace(name=name, labels=labels or {})),
                       namespace=header)


def _update(client: Client, name: str, header, labels=None, paths=None):
    pb = client.namespaces_pb2
    request = pb.UpdateNamespaceRequest(namespace=pb.Namespace(name=name, labels=labels or {}))
    if paths is not None:
        request.update_mask.paths.extend(paths)
    return client.call(client.namespaces.Update, request, namespace=header)


def _names(client: Client) -> list[tuple[str, dict]]:
    out = client.call(client.namespaces.List, client.namespaces_pb2.ListNamespacesRequest())
    assert out.ok, out
    return sorted((n.name, dict(n.labels)) for n in out.response.namespaces)


@pytest.mark.parametrize("header", [None, "", "bad ns", "default"], ids=["none", "empty", "invalid", "other"])
def test_create_and_update_whatever_the_header(clients: dict[str, Client], header) -> None:
    tag = {None: "none", "": "empty", "bad ns": "invalid", "default": "other"}[header]
    got = {}
    for side, client in clients.items():
        got[side] = [str(_create(client, f"c-{tag}", header, {"a": "b"})),
                     str(_update(client, f"u-{tag}", header, {"a": "b"})),
                     str(_update(client, f"c-{tag}", header, {"x": "y"}, ["labels.x"]))]
    assert got["ours"] == got["real"]
    assert all(text.startswith("OK") for text in got["ours"])
    assert _names(clients["ours"]) == _names(clients["real"])


def test_events_carry_the_namespace_own_name(clients: dict[str, Client]) -> None:
    got = {}
    for side, client in clients.items():
        subscription = Subscription(client, ['topic~="/namespaces/"'], {"evt-a", "evt-b", "default"})
        subscription.wait_ready()
        assert _create(client, "evt-a", "default", {"k": "v"}).ok
        assert _update(client, "evt-b", "default", {"k": "w"}).ok
        assert _update(client, "evt-a", None, {"k": "x"}, ["labels.k"]).ok
        got[side] = subscription.close()
    assert got["ours"] == got["real"]
    assert [(ns, topic) for ns, topic, _ in got["ours"]] == [
        ("evt-a", "/namespaces/create"), ("evt-b", "/namespaces/update"), ("evt-a", "/namespaces/update")]


def test_update_of_an_invalid_name(clients: dict[str, Client]) -> None:
    """Same code as 2.x (Unknown, the identifier rule in the text); 2.x has written by then, we have not."""
    real = _update(clients["real"], INVALID, "default", {"a": "b"})
    ours = _update(clients["ours"], INVALID, "default", {"a": "b"})
    assert (real.code, ours.code) == (real.code, real.code)
    assert real.details == f"failed publishing event: {ours.details}"
    assert (INVALID, {"a": "b"}) in _names(clients["real"])
    assert INVALID not in {name for name, _ in _names(clients["ours"])}


@pytest.mark.parametrize("labels", [{}, {"a": "b"}], ids=["no-labels", "labels"])
def test_update_of_an_empty_name(clients: dict[str, Client], labels) -> None:
    got = {side: str(_update(client, "", "default", labels)) for side, client in clients.items()}
    assert got["ours"] == got["real"]
