"""Container records in ``v1/<ns>/containers``, read-only, as containerd reads them.

Layout (containerd's metadata/containers.go; confirmed on files 2.1.9 wrote
through ``ctr containers create`` and Containers/Create)::

    [containers]
      [<id>]
        createdat, updatedat  Go time.MarshalBinary
        [labels]              <key> = <value>
        image                 string
        [runtime]             name = string, options = marshalled google.protobuf.Any
        spec                  marshalled google.protobuf.Any
        snapshotter, snapshotKey, sandboxid (1.7+)   strings
        [extensions]          <name> = marshalled google.protobuf.Any

Containers are made and changed by containerd (they belong to tasks and
snapshots we do not run), so there is no write path here. Reading follows
containerd: a missing time is Go's zero time, a missing key an empty field,
and a record that does not decode fails the whole call (``failed to read
container "x": ...``), as containerd's readContainer does. Values stay bytes;
the gRPC layer frames them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Optional, Sequence

from ..errors import DataCorruption, NotFound, go_quote
from . import codec, layout
from .filters import parse_all
from .validation import namespace_required

if TYPE_CHECKING:
    from .. import bolt
    from .db import MetadataDB

IMAGE_KEY = b"image"
RUNTIME_BUCKET = b"runtime"
RUNTIME_NAME_KEY = b"name"
RUNTIME_OPTIONS_KEY = b"options"
SPEC_KEY = b"spec"
SNAPSHOTTER_KEY = b"snapshotter"
SNAPSHOT_KEY_KEY = b"snapshotKey"
SANDBOX_KEY = b"sandboxid"
EXTENSIONS_BUCKET = b"extensions"

@dataclass
class ContainerRecord:
    """One stored container; strings as stored bytes, Anys still marshalled."""

    id: bytes
    labels: dict[bytes, bytes] = field(default_factory=dict)
    image: bytes = b""
    runtime_name: bytes = b""
    runtime_options: Optional[bytes] = None   # None: no options key
    spec: Optional[bytes] = None              # None: no spec key
    snapshotter: bytes = b""
    snapshot_key: bytes = b""
    sandbox: bytes = b""
    extensions: dict[bytes, bytes] = field(default_factory=dict)
    created: codec.Timestamp = codec.GO_ZERO_TIME
    updated: codec.Timestamp = codec.GO_ZERO_TIME

    def text(self, value: bytes) -> str:
        return value.decode("utf-8", "surrogateescape")


def _time(record: "bolt.Bucket", key: bytes, cid: bytes) -> codec.Timestamp:
    raw = record.get(key)
    if raw is None:
        return codec.GO_ZERO_TIME
    try:
        return codec.decode_time(raw)
    except codec.CodecError as exc:
        raise _unreadable(cid, str(exc)) from None


def _unreadable(cid: bytes, why: str) -> DataCorruption:
    return DataCorruption(f"failed to read container {go_quote(cid.decode('utf-8', 'surrogateescape'))}: {why}")


def _pairs(bucket: Optional["bolt.Bucket"]) -> dict[bytes, bytes]:
    # nested buckets read as empty values, as Go's ForEach hands them over (v == nil)
    return {} if bucket is None else {k: v or b"" for k, v in bucket.items()}


def read_record(cid: bytes, record: "bolt.Bucket") -> ContainerRecord:
    out = ContainerRecord(id=cid, labels=_pairs(record.bucket(layout.LABELS_BUCKET)),
                          created=_time(record, layout.CREATED_AT_KEY, cid),
                          updated=_time(record, layout.UPDATED_AT_KEY, cid))
    for key, value in record.items():
        if key == IMAGE_KEY:
            out.image = value or b""
        elif key == RUNTIME_BUCKET:
            runtime = record.bucket(key) if value is None else None
            if runtime is not None:
                out.runtime_name = runtime.get(RUNTIME_NAME_KEY) or b""
                options = runtime.get(RUNTIME_OPTIONS_KEY)
                out.runtime_options = options
        elif key == SPEC_KEY:
            out.spec = value or b""
        elif key == SNAPSHOT_KEY_KEY:
            out.snapshot_key = value or b""
        elif key == SNAPSHOTTER_KEY:
            out.snapshotter = value or b""
        elif key == SANDBOX_KEY:
            out.sandbox = value or b""
        elif key == EXTENSIONS_BUCKET:
            out.extensions = _pairs(record.bucket(key) if value is None else None)
    return out


def _adaptor(record: ContainerRecord) -> Callable[[Sequence[str]], tuple[str, bool]]:
    """containerd's adaptContainer: id, image, runtime.name (present when non-empty), labels.<key>."""
    def adaptor(path: Sequence[str]) -> tuple[str, bool]:
        if not path:
            return "", False
        head = path[0]
        if head == "id":
            return record.text(record.id), bool(record.id)
        if head == "image":
            return record.text(record.image), bool(record.image)
        if head == "runtime":
            if len(path) > 1 and path[1] == "name":
                return record.text(record.runtime_name), bool(record.runtime_name)
            return "", False
        if head == "labels":
            if not record.labels:
                return "", False
            key = ".".join(path[1:]).encode("utf-8", "surrogateescape")
            value = record.labels.get(key)
            return (record.text(value), True) if value is not None else ("", False)
        return "", False
    return adaptor


def _containers(tx: "bolt.Tx", ns: str) -> Optional["bolt.Bucket"]:
    bucket = tx.bucket(layout.SCHEMA_BUCKET)
    for name in (ns.encode(), layout.CONTAINERS_BUCKET):
        if bucket is None:
            return None
        bucket = bucket.bucket(name)
    return bucket


class ContainerStore:
    """containerd's container store, read side, over a :class:`MetadataDB`."""

    def __init__(self, db: "MetadataDB") -> None:
        self.db = db

    def get(self, namespace: Optional[str], cid: str) -> ContainerRecord:
        ns = namespace_required(namespace)
        key = cid.encode("utf-8", "surrogateescape")

        def read(tx: "bolt.Tx") -> ContainerRecord:
            containers = _containers(tx, ns)
            record = containers.bucket(key) if containers is not None and key else None
            if record is None:
                raise NotFound(f"container {go_quote(cid)} in namespace {go_quote(ns)}")
            return read_record(key, record)
        return self.db.view(read)

    def list(self, namespace: Optional[str], filters: Sequence[str] = ()) -> list[ContainerRecord]:
        """Matching containers in id order; every record is read (one that
        does not decode fails the call, matching or not, as in containerd)."""
        ns = namespace_required(namespace)
        matcher = parse_all(list(filters))

        def read(tx: "bolt.Tx") -> list[ContainerRecord]:
            containers = _containers(tx, ns)
            if containers is None:
                return []
            out = []
            for key, value in containers.items():
                if value is not None:
                    continue
                record = read_record(key, containers.bucket(key))
                if matcher.match(_adaptor(record)):
                    out.append(record)
            return out
        return self.db.view(read)
