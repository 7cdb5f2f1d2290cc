"""The Images/Namespaces/Leases scenario run step by step against each server.

A step is one RPC plus the status real containerd 1.6 gives (`expect`, checked
against real containerd so the scenario itself is verified) . Steps run in
order in one namespace, so later steps see what earlier ones created. Each
outcome is normalised to what must be equal between servers:

* status code and message (messages are containerd's stable error text, filter
  parse errors included; a step sets `compare_details=False` only where the
  text is a bbolt error passed through: the empty label key cases);
* the response as a dict, where timestamps are replaced by relations:
  created vs updated (==, <, >) and created vs the value first seen for that
  object in this run (unchanged / changed), since clocks differ between
  servers but these relations must not.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

import grpc
from google.protobuf import timestamp_pb2

from tests.compat.grpc_client import Client, Outcome

D256 = "sha256:" + "a1" * 32
D256B = "sha256:" + "b2" * 32
D256C = "sha256:" + "c3" * 32
D384 = "sha384:" + "d4" * 48
D512 = "sha512:" + "e5" * 64
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"

OK = grpc.StatusCode.OK
INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
EXISTS = grpc.StatusCode.ALREADY_EXISTS
PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION
UNKNOWN = grpc.StatusCode.UNKNOWN


class Run:
    """State of one scenario run against one server."""

    def __init__(self, client: Client, namespace: str) -> None:
        self.client = client
        self.ns = namespace
        self.first_created: dict[str, tuple] = {}

    # request builders -------------------------------------------------
    def image(self, name: str, digest: str = D256, media_type: str = MANIFEST, size: int = 1234,
              labels: Optional[dict] = None, annotations: Optional[dict] = None,
              created_at: Optional[int] = None) -> Any:
        pb = self.client.images_pb2
        target = self.client.descriptor_pb2.Descriptor(media_type=media_type, digest=digest, size=size,
                                                       annotations=annotations or {})
        image = pb.Image(name=name, labels=labels or {}, target=target)
        if created_at is not None:
            # A client-supplied time the server must ignore (it stamps its own clock).
            image.created_at.seconds = created_at
            image.updated_at.seconds = created_at
        return image

    def create(self, ns: Optional[str] = "", **kw) -> Outcome:
        pb = self.client.images_pb2
        return self.client.call(self.client.images.Create, pb.CreateImageRequest(image=self.image(**kw)),
                                self.ns if ns == "" else ns)

    def get(self, name: str, ns: Optional[str] = "") -> Outcome:
        pb = self.client.images_pb2
        return self.client.call(self.client.images.Get, pb.GetImageRequest(name=name), self.ns if ns == "" else ns)

    def list(self, *filters: str, ns: Optional[str] = "") -> Outcome:
        pb = self.client.images_pb2
        return self.client.call(self.client.images.List, pb.ListImagesRequest(filters=list(filters)),
                                self.ns if ns == "" else ns)

    def list_with_metadata(self, metadata: list) -> Outcome:
        """Images/List with hand-made request metadata (header edge cases)."""
        pb = self.client.images_pb2
        try:
            response = self.client.images.List(pb.ListImagesRequest(), metadata=metadata, timeout=10)
        except grpc.RpcError as err:
            return Outcome(err.code(), err.details() or "")
        return Outcome(OK, "", response)

    def update(self, paths: Optional[list] = None, **kw) -> Outcome:
        pb = self.client.images_pb2
        request = pb.UpdateImageRequest(image=self.image(**kw))
        if paths is not None:
            request.update_mask.paths.extend(paths)
        return self.client.call(self.client.images.Update, request, self.ns)

    def update_empty_mask(self, **kw) -> Outcome:
        """Update with update_mask present on the wire but holding no paths."""
        pb = self.client.images_pb2
        request = pb.UpdateImageRequest(image=self.image(**kw))
        request.update_mask.SetInParent()
        return self.client.call(self.client.images.Update, request, self.ns)

    def delete(self, name: str, sync: bool = False) -> Outcome:
        pb = self.client.images_pb2
        return self.client.call(self.client.images.Delete, pb.DeleteImageRequest(name=name, sync=sync), self.ns)

    def ns_create(self, name: str, labels: Optional[dict] = None, header: Optional[str] = "") -> Outcome:
        """`header`: the containerd-namespace header sent ("" = the run's, None = none)."""
        pb = self.client.namespaces_pb2
        request = pb.CreateNamespaceRequest(namespace=pb.Namespace(name=name, labels=labels or {}))
        return self.client.call(self.client.namespaces.Create, request, self.ns if header == "" else header)

    def ns_get(self, name: str) -> Outcome:
        pb = self.client.namespaces_pb2
        return self.client.call(self.client.namespaces.Get, pb.GetNamespaceRequest(name=name), self.ns)

    def ns_list(self) -> Outcome:
        pb = self.client.namespaces_pb2
        out = self.client.call(self.client.namespaces.List, pb.ListNamespacesRequest(), self.ns)
        if out.ok:
            # Other tests share the daemon: keep only this run's namespaces.
            keep = [n for n in out.response.namespaces if n.name.startswith(self.ns)]
            del out.response.namespaces[:]
            out.response.namespaces.extend(keep)
        return out

    def ns_update(self, name: str, labels: Optional[dict] = None, paths: Optional[list] = None,
                  header: Optional[str] = "") -> Outcome:
        pb = self.client.namespaces_pb2
        request = pb.UpdateNamespaceRequest(namespace=pb.Namespace(name=name, labels=labels or {}))
        if paths is not None:
            request.update_mask.paths.extend(paths)
        return self.client.call(self.client.namespaces.Update, request, self.ns if header == "" else header)

    def ns_delete(self, name: str, header: Optional[str] = "") -> Outcome:
        pb = self.client.namespaces_pb2
        return self.client.call(self.client.namespaces.Delete, pb.DeleteNamespaceRequest(name=name),
                                self.ns if header == "" else header)

    def lease_create(self, lease_id: str, labels: Optional[dict] = None, ns: Optional[str] = "") -> Outcome:
        pb = self.client.leases_pb2
        return self.client.call(self.client.leases.Create, pb.CreateRequest(id=lease_id, labels=labels or {}),
                                self.ns if ns == "" else ns)

    def lease_create_anonymous(self) -> Outcome:
        """Create with an empty id: the server picks one. Delete it again and hide the random id."""
        out = self.lease_create("")
        if out.ok:
            generated = out.response.lease.id
            deleted = self.lease_delete(generated)
            if not deleted.ok:
                return deleted
            out.response.lease.id = "<generated, non-empty>" if generated else ""
            out.response.lease.ClearField("created_at")
        return out

    def lease_add(self, lease_id: str, resource_id: str, resource_type: str) -> Outcome:
        pb = self.client.leases_pb2
        request = pb.AddResourceRequest(id=lease_id, resource=pb.Resource(id=resource_id, type=resource_type))
        return self.client.call(self.client.leases.AddResource, request, self.ns)

    def lease_remove(self, lease_id: str, resource_id: str, resource_type: str) -> Outcome:
        pb = self.client.leases_pb2
        request = pb.DeleteResourceRequest(id=lease_id, resource=pb.Resource(id=resource_id, type=resource_type))
        return self.client.call(self.client.leases.DeleteResource, request, self.ns)

    def lease_resources(self, lease_id: str) -> Outcome:
        pb = self.client.leases_pb2
        return self.client.call(self.client.leases.ListResources, pb.ListResourcesRequest(id=lease_id), self.ns)

    def lease_list(self, *filters: str) -> Outcome:
        pb = self.client.leases_pb2
        return self.client.call(self.client.leases.List, pb.ListRequest(filters=list(filters)), self.ns)

    def lease_delete(self, lease_id: str, sync: bool = False) -> Outcome:
        pb = self.client.leases_pb2
        return self.client.call(self.client.leases.Delete, pb.DeleteRequest(id=lease_id, sync=sync), self.ns)

    # normalisation ----------------------------------------------------
    def normalise(self, outcome: Outcome) -> dict:
        result: dict = {"code": outcome.code.name, "details": outcome.details}
        if outcome.ok:
            result["response"] = self._walk(outcome.response)
        return result

    def _walk(self, message: Any) -> Any:
        """A message as plain dicts/lists, timestamps replaced by their relations."""
        out: dict = {}
        for field, value in message.ListFields():
            if field.name in ("created_at", "updated_at"):
                continue
            if field.message_type is not None and field.message_type.GetOptions().map_entry:
                out[field.name] = {k: (self._walk(v) if hasattr(v, "DESCRIPTOR") else v) for k, v in value.items()}
            elif field.is_repeated:
                out[field.name] = [self._walk(v) if field.message_type is not None else v for v in value]
            elif field.message_type is not None:
                out[field.name] = self._walk(value)
            else:
                out[field.name] = value
        if "created_at" in message.DESCRIPTOR.fields_by_name:
            out["timestamps"] = self._time_relations(message)
        return out

    def _time_relations(self, message: Any) -> dict:
        created = _nanos(message.created_at) if message.HasField("created_at") else None
        relations: dict = {"created_set": created is not None}
        if created is not None:
            # Servers stamp their own clock: a client's old timestamp must not survive.
            relations["created_after_2020"] = created > 1_577_836_800 * 1_000_000_000
        if "updated_at" in message.DESCRIPTOR.fields_by_name:
            updated = _nanos(message.updated_at) if message.HasField("updated_at") else None
            if created is not None and updated is not None:
                relations["updated_vs_created"] = "==" if updated == created else (">" if updated > created else "<")
        key = getattr(message, "name", "") or getattr(message, "id", "")
        if created is not None and key:
            first = self.first_created.setdefault(key, created)
            relations["created"] = "as first seen" if first == created else "changed"
        return relations

    def forget(self, key: str) -> None:
        """An object was deleted: its next creation is a new first sighting."""
        self.first_created.pop(key, None)


def _nanos(ts: timestamp_pb2.Timestamp) -> int:
    return ts.seconds * 1_000_000_000 + ts.nanos


@dataclasses.dataclass
class Step:
    id: str
    run: Callable[[Run], Outcome]
    expect: grpc.StatusCode
    compare_details: bool = True
    forget: Optional[str] = None   # object name whose creation time to forget when this step succeeds
    # The status where a release answers otherwise than 1.6 (key: "1.7", "2.1"), measured.
    by_release: dict = dataclasses.field(default_factory=dict)

    def expected(self, minor: str) -> grpc.StatusCode:
        """The status containerd `minor` ("1.6", "1.7", "2.1") gives for this step."""
        return self.by_release.get(minor, self.expect)


def _s(id: str, expect: grpc.StatusCode, run: Callable[[Run], Outcome], **kw) -> Step:
    return Step(id, run, expect, **kw)


LONG_NAME = "example.com/" + "n" * 40000

# The scenario. Names below are the only images in the run's namespace.
STEPS: list[Step] = [
    # --- namespaces on the images API
    _s("ns-missing/list", PRECONDITION, lambda r: r.list(ns=None)),
    _s("ns-missing/create", PRECONDITION, lambda r: r.create(name="a:1", ns=None)),
    _s("ns-empty-header", PRECONDITION, lambda r: r.client.call(
        r.client.images.List, r.client.images_pb2.ListImagesRequest(), "")),
    _s("ns-ttrpc-header-ignored", PRECONDITION, lambda r: r.list_with_metadata(
        [("containerd-namespace-ttrpc", r.ns)])),
    _s("ns-invalid/space", INVALID, lambda r: r.list(ns="bad ns")),
    _s("ns-valid/upper-case", NOT_FOUND, lambda r: r.get("a:1", ns="Upper")),
    _s("ns-invalid/leading-dash", INVALID, lambda r: r.list(ns="-lead")),
    _s("ns-invalid/trailing-dot", INVALID, lambda r: r.list(ns="trail.")),
    _s("ns-invalid/too-long-77", INVALID, lambda r: r.list(ns="a" * 77)),
    _s("ns-valid/76-chars", OK, lambda r: r.list(ns="a" * 76)),
    _s("ns-valid/dots-dashes", OK, lambda r: r.list(ns="a.b-c_d")),
    _s("get/fresh-namespace", NOT_FOUND, lambda r: r.get("a:1")),
    _s("list/fresh-namespace", OK, lambda r: r.list()),
    # --- Create validation
    _s("create/empty-name", INVALID, lambda r: r.create(name="")),
    _s("create/no-target", INVALID, lambda r: r.create(name="v:1", digest="", media_type="", size=0)),
    _s("create/digest-empty", INVALID, lambda r: r.create(name="v:1", digest="")),
    _s("create/digest-no-colon", INVALID, lambda r: r.create(name="v:1", digest="a1" * 32)),
    _s("create/digest-sha256-short", INVALID, lambda r: r.create(name="v:1", digest="sha256:" + "a" * 63)),
    _s("create/digest-sha256-long", INVALID, lambda r: r.create(name="v:1", digest="sha256:" + "a" * 65)),
    _s("create/digest-sha256-upper", INVALID, lambda r: r.create(name="v:1", digest="sha256:" + "A" * 64)),
    _s("create/digest-sha256-nonhex", INVALID, lambda r: r.create(name="v:1", digest="sha256:" + "g" * 64)),
    _s("create/digest-sha384-short", INVALID, lambda r: r.create(name="v:1", digest="sha384:" + "a" * 64)),
    _s("create/digest-sha512-short", INVALID, lambda r: r.create(name="v:1", digest="sha512:" + "a" * 64)),
    _s("create/digest-unknown-alg", INVALID, lambda r: r.create(name="v:1", digest="md5:" + "a" * 32)),
    _s("create/digest-upper-alg", INVALID, lambda r: r.create(name="v:1", digest="SHA256:" + "a" * 64)),
    _s("create/digest-empty-hex", INVALID, lambda r: r.create(name="v:1", digest="sha256:")),
    _s("create/digest-empty-alg", INVALID, lambda r: r.create(name="v:1", digest=":" + "a" * 64)),
    _s("create/size-zero", INVALID, lambda r: r.create(name="v:1", size=0)),
    _s("create/size-negative", INVALID, lambda r: r.create(name="v:1", size=-5)),
    _s("create/no-media-type", INVALID, lambda r: r.create(name="v:1", media_type="")),
    _s("create/label-4097", INVALID, lambda r: r.create(name="v:1", labels={"k" * 2048: "v" * 2049})),
    _s("create/label-key-4097", INVALID, lambda r: r.create(name="v:1", labels={"k" * 4097: ""})),
    _s("get/after-failed-creates", NOT_FOUND, lambda r: r.get("v:1")),
    _s("create/label-exactly-4096", OK, lambda r: r.create(name="v:4096", labels={"k" * 2048: "v" * 2048})),
    # bbolt refuses an empty key; containerd passes that through as UNKNOWN.
    _s("create/label-empty-key", UNKNOWN, lambda r: r.create(name="v:emptykey", labels={"": "x"}),
       compare_details=False),
    _s("get/after-label-empty-key", NOT_FOUND, lambda r: r.get("v:emptykey")),
    _s("create/label-empty-value", OK, lambda r: r.create(name="v:emptyvalue", labels={"k": ""})),
    _s("get/label-empty-value", OK, lambda r: r.get("v:emptyvalue")),
    # Bucket names are not limited to bbolt's 32 KiB key limit: containerd accepts this.
    # (A namespace of its own, so a failure here does not ripple into every List below.)
    _s("create/name-40000-bytes", OK, lambda r: r.create(name=LONG_NAME, ns="long-" + r.ns)),
    _s("get/name-40000-bytes", OK, lambda r: r.get(LONG_NAME, ns="long-" + r.ns)),
    _s("list/name-40000-bytes", OK, lambda r: r.list(ns="long-" + r.ns)),
    _s("create/sha384", OK, lambda r: r.create(name="v:sha384", digest=D384)),
    _s("create/sha512", OK, lambda r: r.create(name="v:sha512", digest=D512)),
    _s("create/odd-name-chars", OK, lambda r: r.create(name="UPPER case/with spaces@and:symbols!")),
    # --- images used by the filter and update steps
    _s("create/alpine-3.18", OK, lambda r: r.create(
        name="docker.io/library/alpine:3.18", digest=D256, media_type=MANIFEST,
        labels={"env": "prod", "team": "a", "com.example/key": "x y"},
        annotations={"org.opencontainers.image.ref.name": "3.18"})),
    _s("create/alpine-3.19", OK, lambda r: r.create(
        name="docker.io/library/alpine:3.19", digest=D256B, media_type=INDEX, labels={"env": "dev"})),
    _s("create/app-v1", OK, lambda r: r.create(
        name="example.com/app:v1", digest=D256C, media_type=DOCKER_MANIFEST,
        labels={"env": "prod", "tier": "web,api", "quote": 'say "hi"'},
        annotations={"a.b": "c"})),
    _s("create/client-timestamps-ignored", OK, lambda r: r.create(name="v:clienttime", created_at=1_000_000_000)),
    _s("update/client-timestamps-ignored", OK, lambda r: r.update(name="v:clienttime", created_at=1_000_000_000,
                                                                    labels={"u": "1"})),
    # Two namespace headers: the first one counts (the run's namespace holds images, the other none).
    _s("ns-header-twice", OK, lambda r: r.list_with_metadata(
        [("containerd-namespace", r.ns), ("containerd-namespace", r.ns + "-second")])),
    _s("ns-header-twice-reversed", OK, lambda r: r.list_with_metadata(
        [("containerd-namespace", r.ns + "-second"), ("containerd-namespace", r.ns)])),
    _s("create/already-exists", EXISTS, lambda r: r.create(name="docker.io/library/alpine:3.18")),
    _s("create/already-exists-other-target", EXISTS, lambda r: r.create(
        name="example.com/app:v1", digest=D256B)),
    _s("get/alpine-3.18", OK, lambda r: r.get("docker.io/library/alpine:3.18")),
    _s("get/missing", NOT_FOUND, lambda r: r.get("docker.io/library/nothere:1")),
    _s("get/empty-name", NOT_FOUND, lambda r: r.get("")),
    _s("get/prefix-of-existing", NOT_FOUND, lambda r: r.get("docker.io/library/alpine")),
    _s("get/other-namespace", NOT_FOUND, lambda r: r.get("docker.io/library/alpine:3.18", ns=r.ns + "-other")),
    # --- List and filters
    _s("list/all", OK, lambda r: r.list()),
    _s("list/name==", OK, lambda r: r.list("name==docker.io/library/alpine:3.18")),
    _s("list/name-quoted", OK, lambda r: r.list('name=="docker.io/library/alpine:3.19"')),
    _s("list/name!=", OK, lambda r: r.list("name!=docker.io/library/alpine:3.18")),
    _s("list/name~=", OK, lambda r: r.list("name~=alpine")),
    _s("list/name~=anchored", OK, lambda r: r.list("name~=^example\\.com/")),
    _s("list/name~=slash-regex", OK, lambda r: r.list("name~=/3.1[89]$/")),
    _s("list/name~=slash-regex-escape", INVALID, lambda r: r.list("name~=/3\\.1[89]$/")),
    _s("list/name-presence", OK, lambda r: r.list("name")),
    _s("list/target.digest", OK, lambda r: r.list("target.digest==" + D256B)),
    _s("list/target.mediatype", OK, lambda r: r.list("target.mediatype==" + MANIFEST)),
    _s("list/target.mediatype~=", OK, lambda r: r.list("target.mediatype~=docker")),
    _s("list/target-bare", OK, lambda r: r.list("target")),
    _s("list/target.size-unsupported", OK, lambda r: r.list("target.size==1234")),
    _s("list/labels.env==prod", OK, lambda r: r.list("labels.env==prod")),
    _s("list/labels.env!=prod", OK, lambda r: r.list("labels.env!=prod")),
    _s("list/labels.env-presence", OK, lambda r: r.list("labels.env")),
    _s("list/labels.team-presence", OK, lambda r: r.list("labels.team")),
    _s("list/labels-quoted-key", OK, lambda r: r.list('labels."com.example/key"=="x y"')),
    _s("list/labels-quoted-value-comma", OK, lambda r: r.list('labels.tier=="web,api"')),
    _s("list/labels-value-escaped-quote", OK, lambda r: r.list('labels.quote=="say \\"hi\\""')),
    _s("list/labels~=", OK, lambda r: r.list("labels.env~=^pr")),
    _s("list/labels-bare", OK, lambda r: r.list("labels")),
    _s("list/annotations-key", OK, lambda r: r.list('annotations."org.opencontainers.image.ref.name"==3.18')),
    _s("list/annotations-presence", OK, lambda r: r.list("annotations.a.b")),
    _s("list/and-comma", OK, lambda r: r.list("labels.env==prod,name~=alpine")),
    _s("list/and-comma-empty-result", OK, lambda r: r.list("labels.env==prod,labels.env==dev")),
    _s("list/or-several", OK, lambda r: r.list("labels.env==dev", "name==example.com/app:v1")),
    _s("list/or-overlapping", OK, lambda r: r.list("labels.env==prod", "labels.env")),
    # Regex dialect: Go RE2. What RE2 cannot compile (lookahead, backreference) matches nothing.
    _s("list/regex-flag-i", OK, lambda r: r.list("name~=(?i)ALPINE")),
    _s("list/regex-lookahead", OK, lambda r: r.list("name~=alpine(?=:3)")),
    _s("list/regex-backreference", OK, lambda r: r.list("name~=(p)\\1")),
    _s("list/regex-posix-class", OK, lambda r: r.list("name~=[[:upper:]]")),
    _s("list/regex-perl-class", OK, lambda r: r.list("name~=:\\d\\.\\d+$")),
    _s("list/regex-unicode-class", OK, lambda r: r.list("name~=^\\p{Lu}")),
    _s("list/regex-quoted-escape", OK, lambda r: r.list('name~="3\\\\.19$"')),
    _s("list/regex-empty-value", INVALID, lambda r: r.list("name~=")),
    _s("list/regex-dot-newline-free", OK, lambda r: r.list("name~=^.*$")),
    _s("list/regex-possessive", OK, lambda r: r.list("name~=a++")),
    _s("list/unknown-field", OK, lambda r: r.list("nosuchfield==x")),
    _s("list/empty-filter-string", OK, lambda r: r.list("")),
    _s("list/syntax-bad-operator", INVALID, lambda r: r.list("name=x")),
    _s("list/syntax-trailing-comma", INVALID, lambda r: r.list("name==x,")),
    _s("list/syntax-unterminated-quote", INVALID, lambda r: r.list('name=="abc')),
    # containerd 1.6 treats an uncompilable regex as "matches nothing", not as an error.
    _s("list/bad-regex-matches-nothing", OK, lambda r: r.list("name~=[unclosed")),
    _s("list/syntax-double-op", INVALID, lambda r: r.list("name====x")),
    _s("list/syntax-one-bad-of-several", INVALID, lambda r: r.list("name==x", "labels.==")),
    # --- Update
    _s("update/missing", NOT_FOUND, lambda r: r.update(name="example.com/nothere:1")),
    _s("update/empty-name", INVALID, lambda r: r.update(name="")),
    _s("update/rename-attempt", NOT_FOUND, lambda r: r.update(paths=["name"], name="example.com/renamed:1")),
    _s("update/mask-name", INVALID, lambda r: r.update(paths=["name"], name="example.com/app:v1")),
    _s("update/mask-invalid", INVALID, lambda r: r.update(paths=["foo"], name="example.com/app:v1")),
    _s("update/mask-target.digest", INVALID, lambda r: r.update(paths=["target.digest"], name="example.com/app:v1")),
    _s("update/mask-labels", OK, lambda r: r.update(paths=["labels"], name="example.com/app:v1",
                                                      labels={"new": "1"}, digest=D256B, size=1)),
    _s("update/mask-labels.key-set", OK, lambda r: r.update(paths=["labels.extra"], name="example.com/app:v1",
                                                              labels={"extra": "yes", "ignored": "no"})),
    _s("update/mask-labels.key-absent", OK, lambda r: r.update(paths=["labels.new"], name="example.com/app:v1")),
    _s("update/mask-labels.dotted.key", OK, lambda r: r.update(paths=["labels.a.b/c"], name="example.com/app:v1",
                                                                labels={"a.b/c": "dotted"})),
    _s("update/mask-labels.empty-key", UNKNOWN, lambda r: r.update(paths=["labels."], name="example.com/app:v1",
                                                                   labels={"": "x"}), compare_details=False),
    _s("update/mask-labels-twice", OK, lambda r: r.update(paths=["labels.dup", "labels.dup"],
                                                            name="example.com/app:v1", labels={"dup": "1"})),
    _s("update/mask-labels.key-value-too-big", INVALID, lambda r: r.update(
        paths=["labels.big"], name="example.com/app:v1", labels={"big": "v" * 4094})),
    _s("update/mask-annotations.empty-key", UNKNOWN, lambda r: r.update(paths=["annotations."],
                                                                        name="example.com/app:v1",
                                                                        annotations={"": "x"}),
       compare_details=False),
    _s("update/mask-labels.dotted-then-cleared", OK, lambda r: r.update(paths=["labels.a.b/c", "labels.dup"],
                                                                         name="example.com/app:v1")),
    _s("get/after-label-updates", OK, lambda r: r.get("example.com/app:v1")),
    _s("update/mask-target", OK, lambda r: r.update(paths=["target"], name="example.com/app:v1",
                                                      digest=D512, media_type=INDEX, size=99,
                                                      annotations={"t": "1"})),
    _s("update/mask-target-invalid", INVALID, lambda r: r.update(paths=["target"], name="example.com/app:v1",
                                                                   size=0)),
    _s("update/mask-annotations", OK, lambda r: r.update(paths=["annotations"], name="example.com/app:v1",
                                                           annotations={"x": "1", "y": "2"})),
    _s("update/mask-annotations.key", OK, lambda r: r.update(paths=["annotations.y"], name="example.com/app:v1",
                                                               annotations={"y": "20", "z": "no"})),
    _s("update/mask-annotations.key-absent", OK, lambda r: r.update(paths=["annotations.x"],
                                                                      name="example.com/app:v1")),
    _s("update/mask-several", OK, lambda r: r.update(paths=["labels.a", "annotations.b"], name="example.com/app:v1",
                                                       labels={"a": "A"}, annotations={"b": "B"})),
    _s("update/mask-set-but-empty", OK, lambda r: r.update_empty_mask(name="docker.io/library/alpine:3.19",
                                                                      digest=D256B, labels={"env": "dev"})),
    _s("update/mask-empty-list-is-full-replace", OK, lambda r: r.update(paths=[], name="docker.io/library/alpine:3.19",
                                                                         digest=D256C, labels={"only": "this"})),
    _s("update/no-mask-invalid-image", INVALID, lambda r: r.update(name="docker.io/library/alpine:3.19", size=0)),
    _s("update/mask-labels-too-big", INVALID, lambda r: r.update(paths=["labels"], name="example.com/app:v1",
                                                                   labels={"k" * 4000: "v" * 97})),
    _s("update/mask-valid-then-invalid", INVALID, lambda r: r.update(paths=["labels", "bogus"],
                                                                       name="example.com/app:v1", labels={"z": "z"})),
    _s("get/app-after-updates", OK, lambda r: r.get("example.com/app:v1")),
    _s("get/alpine-3.19-after-replace", OK, lambda r: r.get("docker.io/library/alpine:3.19")),
    _s("list/after-updates", OK, lambda r: r.list()),
    # --- Delete
    _s("delete/missing", NOT_FOUND, lambda r: r.delete("docker.io/library/nothere:1")),
    _s("delete/empty-name", NOT_FOUND, lambda r: r.delete("")),
    _s("delete/sync", OK, lambda r: r.delete("docker.io/library/alpine:3.19", sync=True),
       forget="docker.io/library/alpine:3.19"),
    _s("delete/plain", OK, lambda r: r.delete("v:sha384"), forget="v:sha384"),
    _s("delete/again", NOT_FOUND, lambda r: r.delete("v:sha384")),
    _s("get/after-delete", NOT_FOUND, lambda r: r.get("docker.io/library/alpine:3.19")),
    _s("create/recreate-after-delete", OK, lambda r: r.create(name="docker.io/library/alpine:3.19", digest=D256)),
    _s("list/final", OK, lambda r: r.list()),
    # --- Namespaces service (names derive from the run's namespace)
    _s("namespaces/create", OK, lambda r: r.ns_create(r.ns + "-nsa", {"a": "1", "b": "2"})),
    _s("namespaces/create-exists", EXISTS, lambda r: r.ns_create(r.ns + "-nsa")),
    _s("namespaces/create-invalid-name", INVALID, lambda r: r.ns_create("Bad Name")),
    _s("namespaces/create-empty-name", INVALID, lambda r: r.ns_create("")),
    _s("namespaces/create-label-too-big", INVALID, lambda r: r.ns_create(r.ns + "-big", {"k" * 4097: ""})),
    _s("namespaces/get", OK, lambda r: r.ns_get(r.ns + "-nsa")),
    # containerd 1.6 answers Get of an unknown namespace with an empty namespace, not NotFound.
    _s("namespaces/get-missing", OK, lambda r: r.ns_get(r.ns + "-none")),
    _s("namespaces/get-images-namespace", OK, lambda r: r.ns_get(r.ns)),
    _s("namespaces/list", OK, lambda r: r.ns_list()),
    _s("namespaces/update-no-mask", OK, lambda r: r.ns_update(r.ns + "-nsa", {"c": "3"})),
    # 1.6 accepts only labels.<key> paths for namespaces; plain "labels" is refused.
    _s("namespaces/update-mask-labels", INVALID, lambda r: r.ns_update(r.ns + "-nsa", {"d": "4"}, ["labels"])),
    _s("namespaces/update-mask-labels.d", OK, lambda r: r.ns_update(r.ns + "-nsa", {"d": "4"}, ["labels.d"])),
    _s("namespaces/update-mask-labels.key", OK, lambda r: r.ns_update(r.ns + "-nsa", {"e": "5", "x": "no"},
                                                                       ["labels.e"])),
    _s("namespaces/update-mask-labels.key-absent", OK, lambda r: r.ns_update(r.ns + "-nsa", {}, ["labels.d"])),
    _s("namespaces/get-after-updates", OK, lambda r: r.ns_get(r.ns + "-nsa")),
    _s("namespaces/update-mask-invalid", INVALID, lambda r: r.ns_update(r.ns + "-nsa", {}, ["name"])),
    # Update of an unknown namespace creates it (1.6 writes the labels bucket on demand).
    _s("namespaces/update-missing-creates", OK, lambda r: r.ns_update(r.ns + "-none", {"a": "b"})),
    _s("namespaces/get-created-by-update", OK, lambda r: r.ns_get(r.ns + "-none")),
    # 1.6 returns the store error unconverted here: UNKNOWN carrying "invalid argument" text.
    _s("namespaces/update-label-too-big", UNKNOWN, lambda r: r.ns_update(r.ns + "-nsa", {"k" * 4097: ""})),
    _s("namespaces/delete-non-empty", PRECONDITION, lambda r: r.ns_delete(r.ns)),
    _s("namespaces/delete-labels-only", OK, lambda r: r.ns_delete(r.ns + "-nsa")),
    _s("namespaces/delete-missing", NOT_FOUND, lambda r: r.ns_delete(r.ns + "-nsa")),
    _s("namespaces/list-after-delete", OK, lambda r: r.ns_list()),
    # The containerd-namespace header on the Namespaces service (the name is in the body).
    # 1.6 writes, then fails publishing the event without a valid header (Unknown); 1.7/2.x
    # publish under the namespace's own name and answer OK.
    _s("namespaces/create-no-header", UNKNOWN, lambda r: r.ns_create(r.ns + "-nohdr", {"a": "1"}, header=None),
       by_release={"1.7": OK, "2.1": OK}),
    _s("namespaces/update-no-header", UNKNOWN, lambda r: r.ns_update(r.ns + "-nohdr", {"b": "2"}, header=None),
       by_release={"1.7": OK, "2.1": OK}),
    _s("namespaces/create-invalid-header", UNKNOWN, lambda r: r.ns_create(r.ns + "-badhdr", header="bad ns"),
       by_release={"1.7": OK, "2.1": OK}),
    _s("namespaces/update-invalid-header", UNKNOWN, lambda r: r.ns_update(r.ns + "-badhdr", {"c": "3"}, ["labels.c"],
                                                                     header="bad ns"),
       by_release={"1.7": OK, "2.1": OK}),
    _s("namespaces/get-written-without-header", OK, lambda r: r.ns_get(r.ns + "-nohdr")),
    _s("namespaces/get-written-with-invalid-header", OK, lambda r: r.ns_get(r.ns + "-badhdr")),
    _s("namespaces/delete-no-header", OK, lambda r: r.ns_delete(r.ns + "-nohdr", header=None)),
    _s("namespaces/delete-invalid-header", OK, lambda r: r.ns_delete(r.ns + "-badhdr", header="bad ns")),
    # An invalid identifier in the body of Update: 1.6 writes it and answers OK; 1.7/2.x write it,
    # then fail publishing the event under that name (Unknown).
    _s("namespaces/update-invalid-name", OK, lambda r: r.ns_update("Bad Name", {"k": "v"}),
       by_release={"1.7": UNKNOWN, "2.1": UNKNOWN}),
    _s("namespaces/list-after-header-cases", OK, lambda r: r.ns_list()),
    # --- Leases
    _s("leases/no-namespace", PRECONDITION, lambda r: r.lease_create("lease-x", ns=None)),
    _s("leases/create", OK, lambda r: r.lease_create("lease-1", {"purpose": "compat"})),
    _s("leases/create-second", OK, lambda r: r.lease_create("lease-2")),
    _s("leases/create-exists", EXISTS, lambda r: r.lease_create("lease-1")),
    _s("leases/create-empty-id-generates", OK, lambda r: r.lease_create_anonymous()),
    _s("leases/create-id-with-space", OK, lambda r: r.lease_create("bad id")),
    _s("leases/delete-id-with-space", OK, lambda r: r.lease_delete("bad id"), forget="bad id"),
    _s("leases/list", OK, lambda r: r.lease_list()),
    _s("leases/list-filter-id", OK, lambda r: r.lease_list("id==lease-2")),
    _s("leases/list-filter-label", OK, lambda r: r.lease_list("labels.purpose==compat")),
    _s("leases/list-filter-syntax", INVALID, lambda r: r.lease_list("id=x")),
    _s("leases/add-content", OK, lambda r: r.lease_add("lease-1", D256, "content")),
    _s("leases/add-content-again", OK, lambda r: r.lease_add("lease-1", D256, "content")),
    _s("leases/add-content-sha512", OK, lambda r: r.lease_add("lease-1", D512, "content")),
    _s("leases/add-content-bad-digest", INVALID, lambda r: r.lease_add("lease-1", "sha256:abc", "content")),
    _s("leases/add-snapshot", OK, lambda r: r.lease_add("lease-1", "snap-key-1", "snapshots/overlayfs")),
    _s("leases/add-snapshot-no-snapshotter", INVALID, lambda r: r.lease_add("lease-1", "k", "snapshots")),
    _s("leases/add-ingest", OK, lambda r: r.lease_add("lease-1", "ingest-ref", "ingests")),
    _s("leases/add-unknown-type", grpc.StatusCode.UNIMPLEMENTED, lambda r: r.lease_add("lease-1", "x", "blobs")),
    _s("leases/add-missing-lease", NOT_FOUND, lambda r: r.lease_add("no-such-lease", D256, "content")),
    _s("leases/list-resources", OK, lambda r: r.lease_resources("lease-1")),
    _s("leases/list-resources-missing-lease", NOT_FOUND, lambda r: r.lease_resources("no-such-lease")),
    _s("leases/remove-content", OK, lambda r: r.lease_remove("lease-1", D256, "content")),
    _s("leases/remove-content-again", OK, lambda r: r.lease_remove("lease-1", D256, "content")),
    _s("leases/remove-missing-lease", NOT_FOUND, lambda r: r.lease_remove("no-such-lease", D256, "content")),
    _s("leases/list-resources-after-remove", OK, lambda r: r.lease_resources("lease-1")),
    _s("leases/delete", OK, lambda r: r.lease_delete("lease-1"), forget="lease-1"),
    _s("leases/delete-missing", NOT_FOUND, lambda r: r.lease_delete("lease-1")),
    _s("leases/delete-sync", OK, lambda r: r.lease_delete("lease-2", sync=True), forget="lease-2"),
    _s("leases/list-after-delete", OK, lambda r: r.lease_list()),
    _s("namespaces/delete-non-empty-still", PRECONDITION, lambda r: r.ns_delete(r.ns)),
    # A namespace holding only a lease: 1.6 deletes it, lease and all (leases do not count as content).
    _s("namespaces/lease-only-create", OK, lambda r: r.ns_create(r.ns + "-leased")),
    _s("namespaces/lease-only-add-lease", OK, lambda r: scenario_lease(r, r.ns + "-leased", "create")),
    _s("namespaces/lease-only-delete", OK, lambda r: r.ns_delete(r.ns + "-leased")),
    _s("namespaces/lease-only-lease-gone", NOT_FOUND, lambda r: scenario_lease(r, r.ns + "-leased", "delete")),
    _s("namespaces/lease-only-delete-again", NOT_FOUND, lambda r: r.ns_delete(r.ns + "-leased")),
    # A namespace whose only image was deleted again is empty.
    _s("namespaces/emptied-create-image", OK, lambda r: r.create(name="tmp:1", ns=r.ns + "-emptied")),
    _s("namespaces/emptied-delete-image", OK, lambda r: r.client.call(
        r.client.images.Delete, r.client.images_pb2.DeleteImageRequest(name="tmp:1"), r.ns + "-emptied")),
    _s("namespaces/emptied-delete", OK, lambda r: r.ns_delete(r.ns + "-emptied")),
]


def scenario_lease(run: Run, namespace: str, action: str) -> Outcome:
    """Create or delete lease "only-lease" in another namespace than the run's."""
    pb = run.client.leases_pb2
    if action == "create":
        return run.client.call(run.client.leases.Create, pb.CreateRequest(id="only-lease"), namespace)
    return run.client.call(run.client.leases.Delete, pb.DeleteRequest(id="only-lease"), namespace)


def run_scenario(client: Client, namespace: str) -> dict[str, dict]:
    """Run every step in order; return step id -> normalised outcome."""
    run = Run(client, namespace)
    results: dict[str, dict] = {}
    for step in STEPS:
        outcome = step.run(run)
        normalised = run.normalise(outcome)
        if step.forget and outcome.ok:
            run.forget(step.forget)
        results[step.id] = normalised
    return results
