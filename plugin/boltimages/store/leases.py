"""Lease records in containerd's own layout (``v1/<ns>/leases/<id>``).

    [<lease id>]
      createdat = <Go time.MarshalBinary>
      [labels]      <key> = <value>         only present when there are labels
      [content]     <digest> = ""           content resources
      [ingests]     <ref> = ""              ingest resources
      [snapshots]   [<snapshotter>] <key> = ""

containerd's garbage collector treats every lease as a root that keeps its
resources alive, unless its ``containerd.io/gc.expire`` label (RFC 3339) is in
the past: then the lease is skipped as a root and deleted by the next
collection. We do not collect content or snapshots (containerd owns them) but
we do remove expired lease records, see :func:`remove_expired`.

Lease ids are only required to be non-empty, like containerd (it does not run
its identifier rules on lease ids); bbolt's own key limits still apply.
"""

from __future__ import annotations

import base64
import os
import re
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Callable, Optional

from .. import bolt
from ..errors import (AlreadyExists, BoltImagesError, DataCorruption, InvalidArgument, NotFound,
                      NotImplementedKind, go_quote)
from . import layout
from .validation import digest_problem
from .codec import CodecError, Timestamp, decode_time, encode_time

#: label whose RFC 3339 value ends a lease's life (containerd's GC reads it)
EXPIRE_LABEL = "containerd.io/gc.expire"

RESOURCE_CONTENT = "content"
RESOURCE_INGESTS = "ingests"
RESOURCE_SNAPSHOTS = "snapshots"


class LeaseIDRequired(BoltImagesError):
    """containerd returns a plain error here, which its gRPC layer reports as Unknown."""

    kind_text = "lease id must be provided"
    grpc_code = "UNKNOWN"


@dataclass
class Lease:
    id: str
    created_at: Optional[Timestamp] = None
    labels: dict[str, str] = field(default_factory=dict)

    def expires_at(self) -> Optional[datetime]:
        """The expiry instant, or None when there is none or it does not parse (containerd ignores it then)."""
        return parse_rfc3339(self.labels.get(EXPIRE_LABEL, ""))


@dataclass(frozen=True)
class Resource:
    id: str
    type: str


def random_id() -> str:
    """containerd's WithRandomID shape: "<nanoseconds of now>-<base64url of 3 random bytes>"."""
    return f"{time.time_ns() % 1_000_000_000}-{base64.urlsafe_b64encode(os.urandom(3)).decode()}"


# Go's time.RFC3339 parser: fixed date/time, optional fraction, Z or ±hh:mm
_RFC3339 = re.compile(r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(\.\d+)?(Z|[+-]\d{2}:\d{2})")


def parse_rfc3339(text: str) -> Optional[datetime]:
    if not _RFC3339.fullmatch(text):
        return None
    normalised = text[:-1] + "+00:00" if text.endswith("Z") else text
    main, _, rest = normalised.partition(".")
    if rest:
        digits = re.match(r"\d+", rest).group(0)  # type: ignore[union-attr]
        normalised = f"{main}.{digits[:6].ljust(6, '0')}{rest[len(digits):]}"
    try:
        return datetime.fromisoformat(normalised)
    except ValueError:
        return None


def _leases_bucket(tx: bolt.Tx, namespace: str) -> Optional[bolt.Bucket]:
    bucket: Optional[bolt.Bucket] = None
    for i, name in enumerate(layout.leases_path(namespace)):
        bucket = tx.bucket(name) if i == 0 else bucket.bucket(name)  # type: ignore[union-attr]
        if bucket is None:
            return None
    return bucket


def _lease_bucket(tx: bolt.Tx, namespace: str, lease_id: str) -> bolt.Bucket:
    leases = _leases_bucket(tx, namespace)
    bucket = leases.bucket(lease_id.encode()) if leases is not None and lease_id else None
    if bucket is None:
        raise NotFound(f"lease {go_quote(lease_id)}")
    return bucket


def _read(key: bytes, bucket: bolt.Bucket) -> Lease:
    lease = Lease(key.decode("utf-8", "surrogateescape"))
    raw = bucket.get(layout.CREATED_AT_KEY)
    if raw is not None:
        try:
            lease.created_at = decode_time(raw)
        except CodecError as exc:
            raise DataCorruption(f"lease {go_quote(lease.id)}: createdat: {exc}") from None
    labels = bucket.bucket(layout.LABELS_BUCKET)
    if labels is not None:
        lease.labels = {k.decode("utf-8", "surrogateescape"): v.decode("utf-8", "surrogateescape")
                        for k, v in labels.items() if v is not None}
    return lease


def create(tx: bolt.Tx, namespace: str, lease_id: str, labels: dict[str, str],
           now: Optional[Timestamp] = None) -> Lease:
    if not lease_id:
        raise LeaseIDRequired()
    bucket: bolt.Bucket = tx.create_bucket_if_not_exists(layout.SCHEMA_BUCKET)
    for name in layout.leases_path(namespace)[1:]:
        bucket = bucket.create_bucket_if_not_exists(name)
    if bucket.bucket(lease_id.encode()) is not None or bucket.get(lease_id.encode()) is not None:
        raise AlreadyExists(f"lease {go_quote(lease_id)}")
    record = bucket.create_bucket(lease_id.encode())
    created = (now or Timestamp.now()).utc()
    record.put(layout.CREATED_AT_KEY, encode_time(created))
    kept = {k: v for k, v in labels.items() if v}  # containerd drops empty values
    if kept:
        lbkt = record.create_bucket(layout.LABELS_BUCKET)
        for key, value in kept.items():
            lbkt.put(key.encode(), value.encode())
    return Lease(lease_id, created, kept)


def delete(tx: bolt.Tx, namespace: str, lease_id: str) -> None:
    leases = _leases_bucket(tx, namespace)
    if leases is None or not lease_id or leases.bucket(lease_id.encode()) is None:
        raise NotFound(f"lease {go_quote(lease_id)}")
    leases.delete_bucket(lease_id.encode())


def get(tx: bolt.Tx, namespace: str, lease_id: str) -> Lease:
    return _read(lease_id.encode(), _lease_bucket(tx, namespace, lease_id))


def list_leases(tx: bolt.Tx, namespace: str,
                match: Callable[[Lease], bool] = lambda _l: True) -> list[Lease]:
    leases = _leases_bucket(tx, namespace)
    if leases is None:
        return []
    out = []
    for key, value in leases.items():
        if value is not None:
            continue
        lease = _read(key, leases.bucket(key))  # type: ignore[arg-type]
        if match(lease):
            out.append(lease)
    return out


# --- resources -------------------------------------------------------------

def _resource_path(resource: Resource) -> tuple[list[str], str]:
    """Bucket keys under the lease and the key to store, validated like containerd."""
    keys = resource.type.split("/")
    if keys[0] in (RESOURCE_CONTENT, RESOURCE_INGESTS):
        if len(keys) != 1:
            raise InvalidArgument(f"invalid resource type {resource.type}")
        if keys[0] == RESOURCE_CONTENT:
            problem = digest_problem(resource.id)
            if problem:
                raise InvalidArgument(f"invalid content resource id {resource.id}: {problem}")
    elif keys[0] == RESOURCE_SNAPSHOTS:
        if len(keys) != 2:
            raise InvalidArgument(f"invalid snapshot resource type {resource.type}")
    else:
        raise NotImplementedKind(f"resource type {resource.type} not supported yet")
    return keys, resource.id


def add_resource(tx: bolt.Tx, namespace: str, lease_id: str, resource: Resource) -> None:
    bucket = _lease_bucket(tx, namespace, lease_id)
    keys, ref = _resource_path(resource)
    for key in keys:
        bucket = bucket.create_bucket_if_not_exists(key.encode())
    bucket.put(ref.encode(), b"")


def delete_resource(tx: bolt.Tx, namespace: str, lease_id: str, resource: Resource) -> None:
    bucket: Optional[bolt.Bucket] = _lease_bucket(tx, namespace, lease_id)
    keys, ref = _resource_path(resource)
    for key in keys:
        bucket = bucket.bucket(key.encode()) if bucket is not None else None
    if bucket is not None and ref:
        bucket.delete(ref.encode())


def list_resources(tx: bolt.Tx, namespace: str, lease_id: str) -> list[Resource]:
    bucket = _lease_bucket(tx, namespace, lease_id)
    out: list[Resource] = []
    for kind in (RESOURCE_CONTENT, RESOURCE_INGESTS):
        sub = bucket.bucket(kind.encode())
        if sub is not None:
            out.extend(Resource(k.decode("utf-8", "surrogateescape"), kind) for k, _ in sub.items())
    snapshots = bucket.bucket(RESOURCE_SNAPSHOTS.encode())
    if snapshots is not None:
        for name, value in snapshots.items():
            if value is not None:
                continue
            kind = f"{RESOURCE_SNAPSHOTS}/{name.decode('utf-8', 'surrogateescape')}"
            out.extend(Resource(k.decode("utf-8", "surrogateescape"), kind)
                       for k, _ in snapshots.bucket(name).items())  # type: ignore[union-attr]
    return out


# --- expiry ------------------------------------------------------------------

def expired(tx: bolt.Tx, now: datetime) -> list[tuple[str, str]]:
    """(namespace, lease id) of every lease whose expire label lies before ``now``."""
    from .namespaces import list_names
    out = []
    for namespace in list_names(tx):
        for lease in list_leases(tx, namespace):
            when = lease.expires_at()
            if when is not None and when < now:
                out.append((namespace, lease.id))
    return out


def remove_expired(tx: bolt.Tx, now: datetime) -> list[tuple[str, str]]:
    """Delete expired lease records, as containerd's next garbage collection would."""
    gone = expired(tx, now)
    for namespace, lease_id in gone:
        delete(tx, namespace, lease_id)
    return gone
