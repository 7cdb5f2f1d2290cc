"""Reading the fields containerd stores alike for content blobs and snapshots.

Both records live at ``v1/<ns>/<kind>/.../<name>`` and carry ``createdat``,
``updatedat`` (Go time.MarshalBinary) and a ``labels`` bucket; the read-only
Content and Snapshots services turn them into their Info messages the same way.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

from google.protobuf import timestamp_pb2

from ..store import layout
from ..store.codec import CodecError, decode_time


def namespace_bucket(tx: Any, ns: str, *path: bytes) -> Any:
    """``v1/<ns>/<path...>``, or None when any bucket on the way is missing."""
    bucket = tx.bucket(layout.SCHEMA_BUCKET)
    for name in (ns.encode(), *path):
        if bucket is None:
            return None
        bucket = bucket.bucket(name)
    return bucket


def proto_timestamp(raw: Optional[bytes]) -> Optional[timestamp_pb2.Timestamp]:
    """A stored time as a protobuf Timestamp; None when absent or undecodable
    (the field is then left unset, as containerd leaves a zero time)."""
    if raw is None:
        return None
    try:
        ts = decode_time(raw)
    except CodecError:
        return None
    return timestamp_pb2.Timestamp(seconds=ts.seconds, nanos=ts.nanos)


def fill_times_and_labels(info: Any, bucket: Any) -> None:
    """Copy created_at, updated_at and labels from a record bucket into ``info``."""
    for field, key in (("created_at", layout.CREATED_AT_KEY), ("updated_at", layout.UPDATED_AT_KEY)):
        ts = proto_timestamp(bucket.get(key))
        if ts is not None:
            getattr(info, field).CopyFrom(ts)
    labels = bucket.bucket(layout.LABELS_BUCKET)
    if labels is not None:
        for k, v in labels.items():
            if v is not None:
                info.labels[k.decode("utf-8", "surrogateescape")] = v.decode("utf-8", "surrogateescape")


def info_adaptor(info: Any, fields: Sequence[str]) -> Callable[[Sequence[str]], tuple[str, bool]]:
    """A filter adaptor over an Info: the named top-level string ``fields`` and
    ``labels.<key>``; any other path (Content's size, Snapshots' kind) matches nothing."""
    def adaptor(path: Sequence[str]) -> tuple[str, bool]:
        if not path:
            return "", False
        if path[0] in fields:
            return getattr(info, path[0]), True
        if path[0] == "labels":
            key = ".".join(path[1:])
            return (info.labels[key], True) if key in info.labels else ("", False)
        return "", False
    return adaptor
