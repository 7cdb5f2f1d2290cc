"""Namespace records in containerd's layout: ``v1/<ns>`` plus ``v1/<ns>/labels``.

Every function takes an open bolt transaction so callers choose how calls are
grouped (one read view, one write batch). The behaviour follows containerd's
metadata namespace store, including its quirks, because clients are written
against it:

* reading the labels of a namespace that does not exist is not an error
  (containerd answers Get with empty labels);
* setting a label creates the namespace when missing (so Update of an unknown
  namespace creates it, as containerd does);
* an empty label value deletes the label.

Deleting is stricter than containerd: containerd only looks at images, blobs,
containers and snapshots, then drops the whole bucket, silently destroying
leases, ingests or 2.x sandboxes a running containerd may still depend on. We
share files with containerd, so anything left in any object bucket blocks the
delete. When containerd would refuse as well, the message is exactly its
message; only when it would have deleted do we name the other buckets (in the
same message shape).
"""

from __future__ import annotations

from typing import Optional

from .. import bolt
from ..errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, go_quote
from . import layout
from .validation import validate_identifier, validate_labels


def _schema(tx: bolt.Tx) -> Optional[bolt.Bucket]:
    return tx.bucket(layout.SCHEMA_BUCKET)


def _namespace_bucket(tx: bolt.Tx, namespace: str) -> Optional[bolt.Bucket]:
    schema = _schema(tx)
    return schema.bucket(namespace.encode()) if schema is not None else None


def list_names(tx: bolt.Tx) -> list[str]:
    """Every namespace, in key order (nested buckets of ``v1``; keys like ``version`` skipped)."""
    schema = _schema(tx)
    if schema is None:
        return []
    return [key.decode("utf-8", "surrogateescape") for key, value in schema.items() if value is None]


def exists(tx: bolt.Tx, namespace: str) -> bool:
    return _namespace_bucket(tx, namespace) is not None


def get_labels(tx: bolt.Tx, namespace: str) -> dict[str, str]:
    """Labels of ``namespace``; empty when it or its labels bucket is missing."""
    ns = _namespace_bucket(tx, namespace)
    labels = ns.bucket(layout.NS_LABELS_BUCKET) if ns is not None else None
    if labels is None:
        return {}
    return {k.decode("utf-8", "surrogateescape"): v.decode("utf-8", "surrogateescape")
            for k, v in labels.items() if v is not None}


def create(tx: bolt.Tx, namespace: str, labels: dict[str, str]) -> None:
    """Create ``namespace`` with ``labels`` (empty values are not stored)."""
    validate_identifier(namespace)
    validate_labels(labels, "namespace.Labels")
    schema = tx.create_bucket_if_not_exists(layout.SCHEMA_BUCKET)
    if schema.bucket(namespace.encode()) is not None:
        raise AlreadyExists(f"namespace {go_quote(namespace)}")
    ns = schema.create_bucket(namespace.encode())
    bucket = ns.create_bucket_if_not_exists(layout.NS_LABELS_BUCKET)
    for key, value in labels.items():
        if value:
            bucket.put(key.encode(), value.encode())


def set_label(tx: bolt.Tx, namespace: str, key: str, value: str) -> None:
    """Set one label; "" deletes it. Creates the namespace if needed (containerd does)."""
    validate_labels({key: value}, "namespace.Labels")
    if not key:
        # bbolt refuses empty keys; containerd surfaces bbolt's "key required"
        raise InvalidArgument("namespace.Labels: label key required")
    schema = tx.create_bucket_if_not_exists(layout.SCHEMA_BUCKET)
    ns = schema.create_bucket_if_not_exists(namespace.encode())
    bucket = ns.create_bucket_if_not_exists(layout.NS_LABELS_BUCKET)
    if value:
        bucket.put(key.encode(), value.encode())
    else:
        bucket.delete(key.encode())


def _is_empty(bucket: Optional[bolt.Bucket]) -> bool:
    return bucket is None or bucket.cursor().first() is None


def remaining_objects(tx: bolt.Tx, namespace: str) -> list[str]:
    """What still lives in ``namespace``, in containerd's words, for the Delete refusal."""
    ns = _namespace_bucket(tx, namespace)
    if ns is None:
        return []
    out: list[str] = []
    if not _is_empty(ns.bucket(layout.IMAGES_BUCKET)):
        out.append("images")
    content = ns.bucket(layout.CONTENT_BUCKET)
    if content is not None and not _is_empty(content.bucket(layout.BLOB_BUCKET)):
        out.append("blobs")
    if not _is_empty(ns.bucket(layout.CONTAINERS_BUCKET)):
        out.append("containers")
    snapshots = ns.bucket(layout.SNAPSHOTS_BUCKET)
    if snapshots is not None:
        for name, value in snapshots.items():
            if value is None and not _is_empty(snapshots.bucket(name)):
                out.append(f"snapshots on {go_quote(name.decode('utf-8', 'surrogateescape'))} snapshotter")
    if out:
        # containerd refuses too: give exactly its answer
        return out
    # beyond containerd's list (see module docstring)
    if content is not None and not _is_empty(content.bucket(layout.INGESTS_BUCKET)):
        out.append("ingests")
    if not _is_empty(ns.bucket(layout.LEASES_BUCKET)):
        out.append("leases")
    if not _is_empty(ns.bucket(layout.SANDBOXES_BUCKET)):
        out.append("sandboxes")
    known = {layout.NS_LABELS_BUCKET, layout.IMAGES_BUCKET, layout.CONTENT_BUCKET, layout.CONTAINERS_BUCKET,
             layout.SNAPSHOTS_BUCKET, layout.LEASES_BUCKET, layout.SANDBOXES_BUCKET}
    for name, value in ns.items():
        if value is None and name not in known and not _is_empty(ns.bucket(name)):
            out.append(name.decode("utf-8", "surrogateescape"))
    return out


def delete(tx: bolt.Tx, namespace: str) -> None:
    """Delete an empty namespace (its labels go with it)."""
    remaining = remaining_objects(tx, namespace)
    if remaining:
        raise FailedPrecondition(
            f"namespace {go_quote(namespace)} must be empty, but it still has {', '.join(remaining)}")
    schema = _schema(tx)
    if schema is None or schema.bucket(namespace.encode()) is None:
        raise NotFound(f"namespace {go_quote(namespace)}")
    schema.delete_bucket(namespace.encode())
