"""Behaviour of every service beside Images, through a real `boltimages serve`."""

from __future__ import annotations

import os
import time

import grpc
import pytest
from google.protobuf import empty_pb2, field_mask_pb2

from boltimages.api.containerd.events import namespace_pb2 as ns_events
from boltimages.api.containerd.services.events.v1 import events_pb2, events_pb2_grpc
from boltimages.api.containerd.services.introspection.v1 import introspection_pb2, introspection_pb2_grpc
from boltimages.api.containerd.services.leases.v1 import leases_pb2, leases_pb2_grpc
from boltimages.api.containerd.services.namespaces.v1 import namespace_pb2, namespace_pb2_grpc
from boltimages.api.containerd.services.version.v1 import version_pb2_grpc

from .conftest import Collector, md

DIGEST = "sha256:" + "ab" * 32


@pytest.fixture(scope="module")
def namespaces(channel):
    return namespace_pb2_grpc.NamespacesStub(channel)


@pytest.fixture(scope="module")
def leases(channel):
    return leases_pb2_grpc.LeasesStub(channel)


def code_of(fn, *args, **kw) -> tuple[grpc.StatusCode, str]:
    try:
        fn(*args, timeout=10, **kw)
    except grpc.RpcError as err:
        return err.code(), err.details()
    return grpc.StatusCode.OK, ""


# --- namespaces ----------------------------------------------------------------

def test_namespace_create_get_list_update_delete(namespaces):
    N = namespace_pb2
    created = namespaces.Create(N.CreateNamespaceRequest(namespace=N.Namespace(name="t-ns", labels={"a": "1"})),
                                timeout=10)
    assert created.namespace.name == "t-ns"
    got = namespaces.Get(N.GetNamespaceRequest(name="t-ns"), timeout=10).namespace
    assert dict(got.labels) == {"a": "1"}
    names = [n.name for n in namespaces.List(N.ListNamespacesRequest(), timeout=10).namespaces]
    assert "t-ns" in names and names == sorted(names)
    # masked update touches only the named label; "" removes it
    namespaces.Update(N.UpdateNamespaceRequest(namespace=N.Namespace(name="t-ns", labels={"b": "2"}),
                                               update_mask=field_mask_pb2.FieldMask(paths=["labels.b"])),
                      timeout=10)
    assert dict(namespaces.Get(N.GetNamespaceRequest(name="t-ns"), timeout=10).namespace.labels) == \
        {"a": "1", "b": "2"}
    namespaces.Update(N.UpdateNamespaceRequest(namespace=N.Namespace(name="t-ns"),
                                               update_mask=field_mask_pb2.FieldMask(paths=["labels.a"])),
                      timeout=10)
    assert dict(namespaces.Get(N.GetNamespaceRequest(name="t-ns"), timeout=10).namespace.labels) == {"b": "2"}
    # unmasked update replaces the whole label set
    namespaces.Update(N.UpdateNamespaceRequest(namespace=N.Namespace(name="t-ns", labels={"c": "3"})), timeout=10)
    assert dict(namespaces.Get(N.GetNamespaceRequest(name="t-ns"), timeout=10).namespace.labels) == {"c": "3"}
    code, msg = code_of(namespaces.Update, N.UpdateNamespaceRequest(
        namespace=N.Namespace(name="t-ns"), update_mask=field_mask_pb2.FieldMask(paths=["name"])))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and msg == 'cannot update "name" field'
    namespaces.Delete(N.DeleteNamespaceRequest(name="t-ns"), timeout=10)
    assert "t-ns" not in [n.name for n in namespaces.List(N.ListNamespacesRequest(), timeout=10).namespaces]


def test_namespace_errors(namespaces):
    N = namespace_pb2
    namespaces.Create(N.CreateNamespaceRequest(namespace=N.Namespace(name="dup")), timeout=10)
    assert code_of(namespaces.Create, N.CreateNamespaceRequest(namespace=N.Namespace(name="dup"))) == \
        (grpc.StatusCode.ALREADY_EXISTS, 'namespace "dup": already exists')
    code, msg = code_of(namespaces.Create, N.CreateNamespaceRequest(namespace=N.Namespace(name="bad name")))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert msg == 'identifier "bad name" must match ^[A-Za-z0-9]+(?:[._-](?:[A-Za-z0-9]+))*$: invalid argument'
    code, msg = code_of(namespaces.Create, N.CreateNamespaceRequest(
        namespace=N.Namespace(name="biglabel", labels={"k": "v" * 5000})))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and msg.startswith("namespace.Labels: label key and value")
    assert code_of(namespaces.Delete, N.DeleteNamespaceRequest(name="never-made")) == \
        (grpc.StatusCode.NOT_FOUND, 'namespace "never-made": not found')
    # containerd answers Get for an unknown namespace with empty labels, not NotFound
    got = namespaces.Get(N.GetNamespaceRequest(name="never-made"), timeout=10).namespace
    assert got.name == "never-made" and not got.labels


def test_namespace_delete_refused_while_it_holds_a_lease(namespaces, leases):
    N = namespace_pb2
    namespaces.Create(N.CreateNamespaceRequest(namespace=N.Namespace(name="held")), timeout=10)
    leases.Create(leases_pb2.CreateRequest(id="l"), metadata=md("held"), timeout=10)
    code, msg = code_of(namespaces.Delete, N.DeleteNamespaceRequest(name="held"))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert msg == 'namespace "held" must be empty, but it still has leases: failed precondition'
    leases.Delete(leases_pb2.DeleteRequest(id="l"), metadata=md("held"), timeout=10)
    namespaces.Delete(N.DeleteNamespaceRequest(name="held"), timeout=10)


# --- leases ----------------------------------------------------------------------

def test_lease_lifecycle_and_resources(leases):
    L = leases_pb2
    ns = md("lease-ns")
    lease = leases.Create(L.CreateRequest(id="one", labels={"x": "1", "empty": ""}), metadata=ns, timeout=10).lease
    assert lease.id == "one" and dict(lease.labels) == {"x": "1"}
    assert abs(lease.created_at.seconds - time.time()) < 60
    auto = leases.Create(L.CreateRequest(), metadata=ns, timeout=10).lease
    assert auto.id and "-" in auto.id
    assert code_of(leases.Create, L.CreateRequest(id="one"), metadata=ns) == \
        (grpc.StatusCode.ALREADY_EXISTS, 'lease "one": already exists')
    listed = leases.List(L.ListRequest(), metadata=ns, timeout=10).leases
    assert sorted(l.id for l in listed) == sorted(["one", auto.id])
    assert [l.id for l in leases.List(L.ListRequest(filters=["labels.x==1"]), metadata=ns, timeout=10).leases] == \
        ["one"]
    assert [l.id for l in leases.List(L.ListRequest(filters=["id==nope", "id==one"]), metadata=ns,
                                      timeout=10).leases] == ["one"]
    code, _ = code_of(leases.List, L.ListRequest(filters=["id=="]), metadata=ns)
    assert code == grpc.StatusCode.INVALID_ARGUMENT

    for r in (L.Resource(id=DIGEST, type="content"), L.Resource(id="ing-1", type="ingests"),
              L.Resource(id="snap-1", type="snapshots/overlayfs")):
        leases.AddResource(L.AddResourceRequest(id="one", resource=r), metadata=ns, timeout=10)
    got = leases.ListResources(L.ListResourcesRequest(id="one"), metadata=ns, timeout=10).resources
    assert [(r.type, r.id) for r in got] == [("content", DIGEST), ("ingests", "ing-1"),
                                             ("snapshots/overlayfs", "snap-1")]
    assert code_of(leases.AddResource, L.AddResourceRequest(id="one", resource=L.Resource(id="x", type="content")),
                   metadata=ns)[0] == grpc.StatusCode.INVALID_ARGUMENT
    assert code_of(leases.AddResource, L.AddResourceRequest(id="one", resource=L.Resource(id="x", type="bogus")),
                   metadata=ns) == (grpc.StatusCode.UNIMPLEMENTED,
                                    "resource type bogus not supported yet: not implemented")
    assert code_of(leases.AddResource, L.AddResourceRequest(
        id="one", resource=L.Resource(id="x", type="snapshots")), metadata=ns)[0] == grpc.StatusCode.INVALID_ARGUMENT
    assert code_of(leases.AddResource, L.AddResourceRequest(id="zzz", resource=L.Resource(id="x", type="ingests")),
                   metadata=ns) == (grpc.StatusCode.NOT_FOUND, 'lease "zzz": not found')
    leases.DeleteResource(L.DeleteResourceRequest(id="one", resource=L.Resource(id="ing-1", type="ingests")),
                          metadata=ns, timeout=10)
    got = leases.ListResources(L.ListResourcesRequest(id="one"), metadata=ns, timeout=10).resources
    assert [r.id for r in got] == [DIGEST, "snap-1"]
    leases.Delete(L.DeleteRequest(id="one", sync=True), metadata=ns, timeout=10)
    assert code_of(leases.Delete, L.DeleteRequest(id="one"), metadata=ns) == \
        (grpc.StatusCode.NOT_FOUND, 'lease "one": not found')
    assert code_of(leases.ListResources, L.ListResourcesRequest(id="one"), metadata=ns)[0] == \
        grpc.StatusCode.NOT_FOUND
    # namespaces are separate: the lease made in lease-ns is invisible elsewhere
    assert leases.List(L.ListRequest(), metadata=md("other-ns"), timeout=10).leases == []


def test_lease_namespace_required(leases):
    assert code_of(leases.List, leases_pb2.ListRequest(), metadata=md(None)) == \
        (grpc.StatusCode.FAILED_PRECONDITION, "namespace is required: failed precondition")
    code, msg = code_of(leases.List, leases_pb2.ListRequest(), metadata=md("no spaces"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and msg.startswith("namespace validation: identifier")


# --- version / introspection / health / reflection --------------------------------

def test_version(channel):
    reply = version_pb2_grpc.VersionStub(channel).Version(empty_pb2.Empty(), timeout=10)
    assert reply.version.startswith("boltimages/")
    assert reply.revision


def test_introspection_server_and_plugins(server, channel):
    stub = introspection_pb2_grpc.IntrospectionStub(channel)
    first = stub.Server(empty_pb2.Empty(), timeout=10)
    assert first.pid == server.proc.pid
    assert first.pidns == os.stat("/proc/self/ns/pid").st_ino  # same pid namespace as the test
    assert len(first.uuid) == 36 and not first.deprecations
    assert stub.Server(empty_pb2.Empty(), timeout=10).uuid == first.uuid
    with open(server.db + ".uuid") as fh:
        assert fh.read().strip() == first.uuid
    plugins = stub.Plugins(introspection_pb2.PluginsRequest(), timeout=10).plugins
    ids = {(p.type, p.id) for p in plugins}
    assert ("io.containerd.grpc.v1", "images") in ids and ("io.containerd.grpc.v1", "leases") in ids
    grpc_only = stub.Plugins(introspection_pb2.PluginsRequest(filters=["type==io.containerd.grpc.v1"]),
                             timeout=10).plugins
    assert grpc_only and all(p.type == "io.containerd.grpc.v1" for p in grpc_only)
    two = stub.Plugins(introspection_pb2.PluginsRequest(filters=["id==leases", "id==version"]), timeout=10).plugins
    assert sorted(p.id for p in two) == ["leases", "version"]
    assert code_of(stub.Plugins, introspection_pb2.PluginsRequest(filters=["id=="]))[0] == \
        grpc.StatusCode.INVALID_ARGUMENT


def test_health_and_reflection(channel):
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "containerd.services.leases.v1.Leases", "containerd.services.images.v1.Images"):
        assert health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10).status == \
            health_pb2.HealthCheckResponse.SERVING
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    replies = list(stub.ServerReflectionInfo(iter([
        reflection_pb2.ServerReflectionRequest(list_services=""),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="containerd.services.leases.v1.Leases")]),
        timeout=10))
    names = {s.name for s in replies[0].list_services_response.service}
    assert {"containerd.services.images.v1.Images", "containerd.services.namespaces.v1.Namespaces",
            "containerd.services.leases.v1.Leases", "containerd.services.version.v1.Version",
            "containerd.services.introspection.v1.Introspection", "containerd.services.events.v1.Events",
            "grpc.health.v1.Health"} <= names
    assert replies[1].file_descriptor_response.file_descriptor_proto


# --- events ------------------------------------------------------------------------

def test_events_from_namespace_changes_and_publish(channel, namespaces):
    everything = Collector(channel)
    only_create = Collector(channel, ['topic=="/namespaces/create"'])
    by_ns = Collector(channel, ['namespace==evns,topic~="^/things/"'])
    try:
        N = namespace_pb2
        namespaces.Create(N.CreateNamespaceRequest(namespace=N.Namespace(name="ev-made", labels={"k": "v"})),
                          metadata=md("evns"), timeout=10)
        namespaces.Delete(N.DeleteNamespaceRequest(name="ev-made"), timeout=10)
        payload = ns_events.NamespaceCreate(name="custom")
        from google.protobuf import any_pb2
        events_pb2_grpc.EventsStub(channel).Publish(events_pb2.PublishRequest(
            topic="/things/happened",
            event=any_pb2.Any(type_url="containerd.events.NamespaceCreate", value=payload.SerializeToString())),
            metadata=md("evns"), timeout=10)
        got = everything.wait_for(3)
        assert [e.topic for e in got] == ["/namespaces/create", "/namespaces/delete", "/things/happened"]
        first = got[0]
        # 1.7/2.x publish it under the namespace's own name (1.6: the caller's)
        assert first.namespace == "ev-made" and first.event.type_url == "containerd.events.NamespaceCreate"
        decoded = ns_events.NamespaceCreate.FromString(first.event.value)
        assert decoded.name == "ev-made" and dict(decoded.labels) == {"k": "v"}
        assert got[1].namespace == "ev-made"
        assert abs(first.timestamp.seconds - time.time()) < 60
        assert [e.topic for e in only_create.wait_for(1)] == ["/namespaces/create"]
        assert [e.topic for e in by_ns.wait_for(1)] == ["/things/happened"]
        # nothing else is on its way to them: each gets exactly its one event
        assert len(only_create.settle()) == 1 and len(by_ns.settle()) == 1
    finally:
        for c in (everything, only_create, by_ns):
            c.close()


def test_event_field_filters_and_forward(channel):
    from google.protobuf import any_pb2, timestamp_pb2
    named = Collector(channel, ["event.name==wanted"])
    try:
        stub = events_pb2_grpc.EventsStub(channel)
        for name in ("other", "wanted"):
            ev = ns_events.NamespaceCreate(name=name)
            stub.Forward(events_pb2.ForwardRequest(envelope=events_pb2.Envelope(
                timestamp=timestamp_pb2.Timestamp(seconds=1_700_000_000), namespace="fwd", topic="/namespaces/create",
                event=any_pb2.Any(type_url="containerd.events.NamespaceCreate", value=ev.SerializeToString()))),
                timeout=10)
        got = named.wait_for(1)
        assert len(got) == 1 and got[0].namespace == "fwd" and got[0].timestamp.seconds == 1_700_000_000
    finally:
        named.close()


def test_event_validation(channel):
    stub = events_pb2_grpc.EventsStub(channel)
    assert code_of(stub.Publish, events_pb2.PublishRequest(topic="no-slash"), metadata=md("x")) == \
        (grpc.StatusCode.INVALID_ARGUMENT, "envelope topic \"no-slash\": must start with '/': invalid argument")
    assert code_of(stub.Publish, events_pb2.PublishRequest(topic="/a"), metadata=md(None)) == \
        (grpc.StatusCode.FAILED_PRECONDITION, "failed publishing event: namespace is required: failed precondition")
    assert code_of(stub.Forward, events_pb2.ForwardRequest(envelope=events_pb2.Envelope(namespace="x", topic="/a"))) \
        == (grpc.StatusCode.INVALID_ARGUMENT, "timestamp must be set on forwarded event: invalid argument")
    code, msg = code_of(lambda req, **kw: list(stub.Subscribe(req, **kw)),
                        events_pb2.SubscribeRequest(filters=["topic=="]))
    assert code == grpc.StatusCode.UNKNOWN
    assert msg == ('subscription error: failed parsing subscription filters: filters: parse error: [topic==]: '
                   'expected value or quoted: invalid argument')
