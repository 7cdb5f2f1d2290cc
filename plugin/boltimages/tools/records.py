"""Image, namespace and content-blob records as the offline tools see them.

Image records are the store's own (store/image_records.py: one reader, one
writer, one filter adaptor); this module gives them their JSON form for
export/import and ``ls``/``inspect``. The tools must reproduce records
exactly (a copy or an export/import round trip may not change a
timestamp's nanoseconds or zone), so times are kept as the stored bytes and
only decoded for display and JSON. Encodings come from store/codec.py,
paths from store/layout.py.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any, Optional

from ..store import codec, image_records, layout
from ..store.image_records import RawImage

# RFC 3339 with nanoseconds and the zone Go recorded: "Z" for UTC, otherwise
# +HH:MM (or +HH:MM:SS for the rare sub-minute offsets Go encodes as version 2)
_TIME_RE = re.compile(r"^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?"
                      r"(Z|([+-])(\d\d):(\d\d)(?::(\d\d))?)$")


def text(data: bytes) -> str:
    """Bytes from the file as str; undecodable bytes survive a round trip (surrogateescape)."""
    return data.decode("utf-8", "surrogateescape")


def raw(value: str) -> bytes:
    return value.encode("utf-8", "surrogateescape")


def time_to_json(data: bytes) -> str:
    """A stored Go time as RFC 3339 with all nine fraction digits and the stored zone."""
    ts = codec.decode_time(data)
    offset = ts.offset or 0
    wall = ts.seconds + offset
    if not codec.in_year_range(wall):
        raise codec.CodecError(f"time outside years 1-9999: {ts.seconds}s")
    days, secs = divmod(wall + codec.UNIX_TO_GO_INTERNAL, 86400)
    import datetime as _dt
    date = _dt.date(1, 1, 1) + _dt.timedelta(days=days)
    base = f"{date.year:04d}-{date.month:02d}-{date.day:02d}T{secs // 3600:02d}:{secs // 60 % 60:02d}:{secs % 60:02d}"
    if ts.offset is None:
        zone = "Z"
    else:
        sign = "-" if offset < 0 else "+"
        a = abs(offset)
        zone = f"{sign}{a // 3600:02d}:{a // 60 % 60:02d}" + (f":{a % 60:02d}" if a % 60 else "")
    return f"{base}.{ts.nanos:09d}{zone}"


def time_from_json(value: str) -> bytes:
    match = _TIME_RE.match(value)
    if not match:
        raise ValueError(f"not an RFC 3339 time: {value!r}")
    y, mo, d, h, mi, s = (int(match.group(i)) for i in range(1, 7))
    frac = (match.group(7) or "").ljust(9, "0")
    import datetime as _dt
    days = (_dt.date(y, mo, d) - _dt.date(1970, 1, 1)).days
    wall = days * 86400 + h * 3600 + mi * 60 + s
    if match.group(8) == "Z":
        offset = None
    else:
        offset = int(match.group(10)) * 3600 + int(match.group(11)) * 60 + int(match.group(12) or 0)
        if match.group(9) == "-":
            offset = -offset
    return codec.encode_time(codec.Timestamp(wall - (offset or 0), int(frac), offset))


def now_bytes() -> bytes:
    """The current time the way containerd stamps records (UTC)."""
    return codec.encode_time(codec.Timestamp.from_unix_nanos(time.time_ns()))


def read_map(bucket: Any, name: bytes) -> dict[str, str]:
    sub = bucket.bucket(name) if bucket is not None else None
    if sub is None:
        return {}
    return {text(k): text(v) for k, v in sub.items() if v is not None}


def write_map(bucket: Any, name: bytes, values: dict[str, str]) -> None:
    """Like containerd's writeMap: replace the whole sub-bucket; none when empty."""
    if bucket.bucket(name) is not None:
        bucket.delete_bucket(name)
    if values:
        sub = bucket.create_bucket(name)
        sub.put_many(sorted((raw(k), raw(v)) for k, v in values.items()))


# --- image records: the store's record module (store/image_records.py), seen as JSON


def image_to_json(namespace: str, record: RawImage) -> dict[str, Any]:
    """One image as a line of an export (and of ``ls -o json``/``inspect``)."""
    return {
        "kind": "image",
        "namespace": namespace,
        "name": record.text_name(),
        "target": {"mediaType": _text_or_empty(record.media_type), "digest": _text_or_empty(record.digest),
                   "size": record.size_value(), "annotations": image_records.text_map(record.annotations) or {}},
        "labels": image_records.text_map(record.labels) or {},
        "createdAt": _time_or_hex(record.created),
        "updatedAt": _time_or_hex(record.updated),
    }


def image_from_json(doc: dict[str, Any]) -> tuple[str, RawImage]:
    """(namespace, record) from an export line; ValueError says what is wrong."""
    target = doc.get("target") or {}
    if not isinstance(target, dict):
        raise ValueError("target must be an object")
    namespace, name = _need_str(doc, "namespace"), _need_str(doc, "name")
    try:
        size = codec.encode_varint(int(target.get("size", 0)))
    except codec.CodecError as exc:
        raise ValueError(f"target size: {exc}") from None
    return namespace, RawImage(
        raw(name), _time_from_doc(doc.get("createdAt")), _time_from_doc(doc.get("updatedAt")),
        image_records.pairs_of(_str_map(doc.get("labels"))), image_records.pairs_of(_str_map(target.get("annotations"))),
        True, raw(str(target.get("digest", ""))), raw(str(target.get("mediaType", ""))), size)


def image_labels(record: RawImage) -> dict[str, str]:
    return image_records.text_map(record.labels) or {}


def _text_or_empty(data: Optional[bytes]) -> str:
    return "" if data is None else text(data)


def _time_or_hex(data: Optional[bytes]) -> Optional[str]:
    if not data:
        return None  # absent, or empty (which containerd cannot read): no time
    try:
        text = time_to_json(data)
        # a few encodings do not survive Go's own decode/encode (negative
        # sub-minute offsets read back unsigned); keep those as raw bytes
        if time_from_json(text) == data:
            return text
    except (codec.CodecError, ValueError, OverflowError):
        pass
    return "hex:" + data.hex()


def _time_from_doc(value: Any) -> Optional[bytes]:
    if value is None:
        return None
    value = str(value)
    if value.startswith("hex:"):
        return bytes.fromhex(value[4:])
    return time_from_json(value)


def _need_str(doc: dict[str, Any], key: str) -> str:
    value = doc.get(key)
    if not isinstance(value, str) or not value:
        raise ValueError(f"record has no {key!r}")
    return value


def _str_map(value: Any) -> dict[str, str]:
    if not value:
        return {}
    if not isinstance(value, dict):
        raise ValueError("labels/annotations must be an object")
    return {str(k): str(v) for k, v in value.items()}


def _replace_record(parent: Any, key: bytes, created: bytes, updated: bytes,
                    labels: dict[str, str]) -> Any:
    """A new bucket ``key`` under ``parent`` (dropping any old one) holding the
    createdat, updatedat and labels every containerd record starts with."""
    if parent.bucket(key) is not None:
        parent.delete_bucket(key)
    bkt = parent.create_bucket(key)
    bkt.put(layout.CREATED_AT_KEY, created)
    bkt.put(layout.UPDATED_AT_KEY, updated)
    write_map(bkt, layout.LABELS_BUCKET, labels)
    return bkt


def namespaces(tx: Any) -> list[str]:
    v1 = tx.bucket(layout.SCHEMA_BUCKET)
    if v1 is None:
        return []
    return [text(k) for k, v in v1.items() if v is None]


def images_bucket(tx: Any, ns: str, create: bool = False) -> Any:
    bucket = tx.create_bucket_if_not_exists(layout.SCHEMA_BUCKET) if create else tx.bucket(layout.SCHEMA_BUCKET)
    for name in (ns.encode(), layout.IMAGES_BUCKET):
        if bucket is None:
            return None
        bucket = bucket.create_bucket_if_not_exists(name) if create else bucket.bucket(name)
    return bucket


def iter_images(tx: Any, ns: str) -> list[RawImage]:
    """Every record of a namespace, in name order, read as the store reads them."""
    bucket = images_bucket(tx, ns)
    return [] if bucket is None else image_records.read_all(bucket)


def namespace_labels(tx: Any, ns: str) -> dict[str, str]:
    v1 = tx.bucket(layout.SCHEMA_BUCKET)
    nsb = v1.bucket(ns.encode()) if v1 is not None else None
    return read_map(nsb, layout.NS_LABELS_BUCKET)


def db_version(tx: Any) -> Optional[int]:
    v1 = tx.bucket(layout.SCHEMA_BUCKET)
    value = v1.get(layout.DB_VERSION_KEY) if v1 is not None else None
    return None if value is None else codec.decode_varint_exact(value)


def ensure_schema(tx: Any, version_from: Optional[int]) -> None:
    """A fresh target file gets the db version of the file its records came from."""
    v1 = tx.create_bucket_if_not_exists(layout.SCHEMA_BUCKET)
    if v1.get(layout.DB_VERSION_KEY) is None:
        v1.put(layout.DB_VERSION_KEY, codec.encode_varint(version_from if version_from is not None else 3))


# --- content blob records: v1/<ns>/content/blob/<digest> -------------------

@dataclass
class Blob:
    digest: str
    size: int
    created: bytes
    updated: bytes
    labels: dict[str, str]


def blob_bucket(tx: Any, ns: str, create: bool = False) -> Any:
    bucket = tx.create_bucket_if_not_exists(layout.SCHEMA_BUCKET) if create else tx.bucket(layout.SCHEMA_BUCKET)
    for name in (ns.encode(), layout.CONTENT_BUCKET, layout.BLOB_BUCKET):
        if bucket is None:
            return None
        bucket = bucket.create_bucket_if_not_exists(name) if create else bucket.bucket(name)
    return bucket


def read_blob(tx: Any, ns: str, digest: str) -> Optional[Blob]:
    blobs = blob_bucket(tx, ns)
    bkt = blobs.bucket(raw(digest)) if blobs is not None else None
    if bkt is None:
        return None
    size = bkt.get(layout.SIZE_KEY)
    return Blob(digest, codec.decode_varint_lenient(size or b""), bkt.get(layout.CREATED_AT_KEY) or b"",
                bkt.get(layout.UPDATED_AT_KEY) or b"", read_map(bkt, layout.LABELS_BUCKET))


def write_blob(tx: Any, ns: str, blob: Blob) -> None:
    blobs = blob_bucket(tx, ns, create=True)
    bkt = _replace_record(blobs, raw(blob.digest), blob.created, blob.updated, blob.labels)
    bkt.put(layout.SIZE_KEY, codec.encode_varint(blob.size))


def time_to_json_safe(data: Optional[bytes]) -> Optional[str]:
    return _time_or_hex(data)
