"""Image, namespace and content-blob records as the offline tools see them.

The tools must reproduce records exactly (a copy or an export/import round
trip may not change a timestamp's nanoseconds or zone), so times are kept
as the stored bytes and only decoded for display and JSON. Encodings come
from store/codec.py, paths from store/layout.py.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional

from ..store import codec, layout, validation

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
    if not -62135596800 <= wall <= 253402300799:
        raise codec.CodecError(f"time outside years 1-9999: {ts.seconds}s")
    days, secs = divmod(wall + 62135596800, 86400)
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


@dataclass
class Image:
    namespace: str
    name: str
    digest: str = ""
    media_type: str = ""
    size: int = 0
    annotations: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    created: bytes = b""
    updated: bytes = b""
    #: decoding problems, for check and for honest display
    problems: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": "image",
            "namespace": self.namespace,
            "name": self.name,
            "target": {"mediaType": self.media_type, "digest": self.digest, "size": self.size,
                       "annotations": self.annotations},
            "labels": self.labels,
            "createdAt": _time_or_hex(self.created),
            "updatedAt": _time_or_hex(self.updated),
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> "Image":
        target = doc.get("target") or {}
        img = cls(namespace=_need_str(doc, "namespace"), name=_need_str(doc, "name"),
                  digest=str(target.get("digest", "")), media_type=str(target.get("mediaType", "")),
                  size=int(target.get("size", 0)),
                  annotations=_str_map(target.get("annotations")), labels=_str_map(doc.get("labels")))
        img.created = _time_from_doc(doc.get("createdAt"))
        img.updated = _time_from_doc(doc.get("updatedAt"))
        return img

    def same_record(self, other: "Image") -> bool:
        return (self.digest, self.media_type, self.size, self.annotations, self.labels, self.created,
                self.updated) == (other.digest, other.media_type, other.size, other.annotations,
                                  other.labels, other.created, other.updated)

    # the shape store/filters.py matches against (containerd's image adaptor fields)
    def filter_fields(self) -> dict[str, Any]:
        return {"name": self.name, "target": {"digest": self.digest, "mediatype": self.media_type},
                "labels": self.labels}


def _time_or_hex(data: bytes) -> Optional[str]:
    if not data:
        return None
    try:
        text = time_to_json(data)
        # a few encodings do not survive Go's own decode/encode (negative
        # sub-minute offsets read back unsigned); keep those as raw bytes
        if time_from_json(text) == data:
            return text
    except (codec.CodecError, ValueError, OverflowError):
        pass
    return "hex:" + data.hex()


def _time_from_doc(value: Any) -> bytes:
    if value is None:
        return b""
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


def read_image(ns: str, name: bytes, bucket: Any) -> Image:
    img = Image(namespace=ns, name=text(name))
    img.created = bucket.get(layout.CREATED_AT_KEY) or b""
    img.updated = bucket.get(layout.UPDATED_AT_KEY) or b""
    for label, value in ((b"createdat", img.created), (b"updatedat", img.updated)):
        if not value:
            img.problems.append(f"no {label.decode()}")
            continue
        try:
            codec.decode_time(value)
        except codec.CodecError as exc:
            img.problems.append(f"{label.decode()} does not decode: {exc}")
    img.labels = read_map(bucket, layout.LABELS_BUCKET)
    img.annotations = read_map(bucket, layout.ANNOTATIONS_BUCKET)
    target = bucket.bucket(layout.TARGET_BUCKET)
    if target is None:
        img.problems.append("no target")
        return img
    img.digest = text(target.get(layout.DIGEST_KEY) or b"")
    img.media_type = text(target.get(layout.MEDIA_TYPE_KEY) or b"")
    size = target.get(layout.SIZE_KEY)
    if size is None:
        img.problems.append("target has no size")
    else:
        try:
            img.size = codec.decode_varint_exact(size)
        except codec.CodecError as exc:
            img.problems.append(f"target size does not decode: {exc}")
    reason = validation.digest_problem(img.digest)
    if reason is not None:
        img.problems.append(f"target digest {img.digest!r} invalid: {reason}")
    if not img.media_type:
        img.problems.append("target has no media type")
    return img


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


def write_image(images: Any, img: Image) -> None:
    """(Re)write one image bucket the way containerd lays it out."""
    bkt = _replace_record(images, raw(img.name), img.created, img.updated, img.labels)
    write_map(bkt, layout.ANNOTATIONS_BUCKET, img.annotations)
    target = bkt.create_bucket(layout.TARGET_BUCKET)
    target.put(layout.DIGEST_KEY, raw(img.digest))
    target.put(layout.MEDIA_TYPE_KEY, raw(img.media_type))
    target.put(layout.SIZE_KEY, codec.encode_varint(img.size))


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


def iter_images(tx: Any, ns: str) -> Iterator[Image]:
    bucket = images_bucket(tx, ns)
    if bucket is None:
        return
    for name, value in bucket.items():
        if value is None:
            yield read_image(ns, name, bucket.bucket(name))


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


def time_to_json_safe(data: bytes) -> Optional[str]:
    return _time_or_hex(data)
