"""Image records in ``v1/<ns>/images``, with containerd's semantics.

Behaviour copied from containerd's metadata image store (1.6, plus the
2.x additions that older clients never trigger):

* every call first requires a namespace (missing/empty: FailedPrecondition;
  malformed: InvalidArgument);
* Create validates (name, labels <= 4096 bytes per key+value, digest per
  algorithm, size > 0, media type), refuses an existing name with
  AlreadyExists, and stamps created == updated = now (or the 2.x
  ``source_date_epoch``);
* Update needs an existing image, applies the field mask (``labels``,
  ``labels.<key>``, ``target``, ``annotations``, ``annotations.<key>``; no
  paths = replace everything), re-validates, keeps createdat and stamps
  updatedat;
* labels/annotations with empty values are dropped, and both sub-buckets
  are rewritten as a whole (containerd deletes and recreates them);
* Delete of a missing image is NotFound; with a 2.x ``target`` whose digest
  differs, containerd answers NotFound ("image has target X, not Y");
* image leases (2.x): when the request carries a lease and the image has a
  ``containerd.io/gc.expire`` label, the name is recorded under
  ``v1/<ns>/leases/<lease>/images``; Delete removes it from that lease.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Optional, Sequence

from ..errors import AlreadyExists, DataCorruption, InvalidArgument, NotFound, go_quote
from . import codec, image_records, layout
from .filters import parse_all
from .identifiers import namespace_required
from .image_records import RawImage

if TYPE_CHECKING:  # the engine is only needed once a store touches a file
    from .. import bolt
    from .db import MetadataDB

MAX_LABEL_SIZE = 4096
GC_EXPIRE_LABEL = "containerd.io/gc.expire"


@dataclass
class Descriptor:
    media_type: str = ""
    digest: str = ""
    size: int = 0
    annotations: Optional[dict[str, str]] = None


@dataclass
class Image:
    name: str = ""
    labels: Optional[dict[str, str]] = None
    target: Descriptor = field(default_factory=Descriptor)
    created_at: Optional[codec.Timestamp] = None
    updated_at: Optional[codec.Timestamp] = None


#: Go's zero time.Time: what containerd writes for a time its record lacked
_GO_ZERO_TIME = codec.Timestamp(-codec.UNIX_TO_GO_INTERNAL, 0)

# --- validation ------------------------------------------------------------

# digest algorithms containerd's binary can compute, with their hex length
_ALGORITHMS = {"sha256": 64, "sha384": 96, "sha512": 128}
_DIGEST_RE = re.compile(r"[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+")
_HEX_RE = re.compile(r"[a-f0-9]+")


def digest_error(digest: str) -> Optional[str]:
    """None when valid, else go-digest's reason text."""
    i = digest.find(":")
    if i <= 0 or i + 1 == len(digest):
        return "invalid checksum digest format"
    algorithm, encoded = digest[:i], digest[i + 1:]
    if algorithm not in _ALGORITHMS:
        if not _DIGEST_RE.fullmatch(digest):
            return "invalid checksum digest format"
        return "unsupported digest algorithm"
    if len(encoded.encode()) != _ALGORITHMS[algorithm]:
        return "invalid checksum digest length"
    if not _HEX_RE.fullmatch(encoded):
        return "invalid checksum digest format"
    return None


def validate_label(key: str, value: str) -> None:
    if len(key.encode()) + len(value.encode()) > MAX_LABEL_SIZE:
        shown = key.encode()[:10].decode("utf-8", "replace") if len(key.encode()) > 10 else key
        raise InvalidArgument(
            f"label key and value greater than maximum size ({MAX_LABEL_SIZE} bytes), key: {shown}")


def validate_image(image: Image) -> None:
    target = image.target
    _validate(image.name, image.labels, target.digest, target.size, target.media_type)


def _validate(name: str, labels: Optional[dict[str, str]], digest: str, size: int, media_type: str) -> None:
    """containerd's validateImage, in its order, on the fields it looks at."""
    if not name:
        raise InvalidArgument("image name must not be empty")
    for key, value in (labels or {}).items():
        try:
            validate_label(key, value)
        except InvalidArgument as exc:
            raise exc.wrap("image.Labels") from None
    reason = digest_error(digest)
    if reason is not None:
        raise InvalidArgument(f"Target.Digest {go_quote(digest)} invalid: {reason}")
    if size <= 0:
        raise InvalidArgument("Target.Size must be greater than zero")
    if not media_type:
        raise InvalidArgument("Target.MediaType must be set")


# --- record encoding -------------------------------------------------------

def _read_map(bucket: "bolt.Bucket", name: bytes) -> Optional[dict[str, str]]:
    sub = bucket.bucket(name)
    if sub is None:
        return None
    return {k.decode("utf-8", "surrogateescape"): (v or b"").decode("utf-8", "surrogateescape")
            for k, v in sub.items()}


def read_image(name: str, bucket: "bolt.Bucket") -> Image:
    image = Image(name=name)
    for key, attr in ((layout.CREATED_AT_KEY, "created_at"), (layout.UPDATED_AT_KEY, "updated_at")):
        raw = bucket.get(key)
        if raw is not None:
            try:
                setattr(image, attr, codec.decode_time(raw))
            except codec.CodecError as exc:
                raise DataCorruption(f"image {go_quote(name)}: {exc}") from None
    image.labels = _read_map(bucket, layout.LABELS_BUCKET)
    image.target.annotations = _read_map(bucket, layout.ANNOTATIONS_BUCKET)
    target = bucket.bucket(layout.TARGET_BUCKET)
    if target is None:
        # containerd: "image %q: unable to read target bucket" (an Unknown error)
        raise DataCorruption(f"image {go_quote(name)}: unable to read target bucket")
    for key, value in target.items():
        if value is None:
            continue
        if key == layout.DIGEST_KEY:
            image.target.digest = value.decode("utf-8", "surrogateescape")
        elif key == layout.MEDIA_TYPE_KEY:
            image.target.media_type = value.decode("utf-8", "surrogateescape")
        elif key == layout.SIZE_KEY:
            image.target.size = codec.decode_varint_lenient(value)
    return image


def write_image(bucket: "bolt.Bucket", image: Image) -> None:
    """Store ``image`` into an existing record bucket, whatever it holds."""
    _write_record(bucket, image, None, fresh=False)


def _write_map(record: "bolt.Bucket", name: bytes, values: Optional[dict[str, str]],
               present: Optional[bool]) -> Optional[list[tuple[bytes, bytes]]]:
    """containerd's writeMap: delete the labels/annotations bucket, recreate it
    when ``values`` is not empty, store the non-empty values. Empty values
    are dropped from ``values`` too (containerd drops them from the object it
    returns), although the bucket is still created when all were empty.
    ``present``: whether the bucket is there now (None: look it up).
    Returns the stored pairs in key order, None when no bucket is left."""
    if present is None:
        present = record.bucket(name) is not None
    if present:
        record.delete_bucket(name)
    if not values:
        return None
    put = record.create_bucket(name).put
    pairs = []
    for key, value in list(values.items()):
        if value == "":
            del values[key]
        else:
            pair = (key.encode(), value.encode())
            put(*pair)
            pairs.append(pair)
    pairs.sort()
    return pairs


def _write_record(record: "bolt.Bucket", image: Image, stored: Optional[RawImage], *, fresh: bool) -> RawImage:
    """Write ``image`` the way containerd's writeImage leaves the record, and
    return the record as now stored.

    ``fresh``: the record bucket was created in this transaction (so it is
    empty). ``stored``: the record as read in this transaction, which lets
    the writer skip lookups it already knows the answer to and puts that
    would store the bytes already there (the stored tree ends up the same).
    """
    created = codec.encode_time(image.created_at or _GO_ZERO_TIME)
    updated = created if image.updated_at == image.created_at and image.updated_at is not None \
        else codec.encode_time(image.updated_at or _GO_ZERO_TIME)
    if stored is None or stored.created != created:
        record.put(layout.CREATED_AT_KEY, created)
    record.put(layout.UPDATED_AT_KEY, updated)
    labels = _write_map(record, layout.LABELS_BUCKET, image.labels,
                        False if fresh else None if stored is None else stored.labels is not None)
    annotations = _write_map(record, layout.ANNOTATIONS_BUCKET, image.target.annotations,
                             False if fresh else None if stored is None else stored.annotations is not None)
    target = image.target
    digest = target.digest.encode()
    media_type = target.media_type.encode()
    size = codec.encode_varint(target.size)
    written = RawImage(image.name.encode(), created, updated, labels, annotations, True, digest, media_type, size)
    if fresh:
        bucket = record.create_bucket(layout.TARGET_BUCKET)
    elif stored is not None and stored.has_target:
        if stored.digest == digest and stored.media_type == media_type and stored.size == size:
            return written  # target unchanged: the three puts would rewrite the same bytes
        bucket = record.bucket(layout.TARGET_BUCKET)
    else:
        bucket = record.create_bucket_if_not_exists(layout.TARGET_BUCKET)
    bucket.put(layout.DIGEST_KEY, digest)
    bucket.put(layout.MEDIA_TYPE_KEY, media_type)
    bucket.put(layout.SIZE_KEY, size)
    return written


def _label_paths(fieldpaths: Sequence[str]) -> bool:
    """Whether an update mask names labels only (``labels``, ``labels.<key>``):
    what ``ctr images label`` and most clients send."""
    return bool(fieldpaths) and all(p == "labels" or p.startswith("labels.") for p in fieldpaths)


def _plain_record(stored: RawImage) -> bool:
    """Whether rewriting ``stored`` after a labels-only change would put back
    exactly the bytes its target and createdat already hold: a created time
    in the 15-byte form (which decodes and re-encodes to itself), and a
    complete target whose size is the canonical varint and whose media type
    is text. Anything else takes the general path, which rewrites them."""
    media_type, size = stored.media_type, stored.size
    return (image_records.plain_time(stored.created)
            and stored.digest is not None and media_type is not None and size is not None
            and codec.encode_varint(stored.size_value()) == size
            and image_records.is_utf8(media_type))


def _update_labels(tx: "bolt.Tx", ns: str, lease: Optional[str], record: "bolt.Bucket", stored: RawImage,
                   given: Image, fieldpaths: Sequence[str], epoch: Optional[codec.Timestamp]) -> RawImage:
    """An update whose mask names only labels, on a plain record: the same
    checks, the same writes and the same result as the general path, worked
    on the stored bytes. The target and createdat are left as stored (the
    general path would put back the same bytes), so nothing but the labels
    is decoded, and the record is returned as written."""
    labels = None if fieldpaths[0] == "labels" else image_records.text_map(stored.labels)
    # one copy of the given labels, shared as the general path shares it: a
    # "labels" path after "labels.<key>" ones takes the copy those changed
    given_labels = None if given.labels is None else dict(given.labels)
    for path in fieldpaths:
        if path == "labels":
            labels = given_labels
        else:
            if labels is None:
                labels = {}
            key = path[len("labels."):]
            labels[key] = (given_labels or {}).get(key, "")
    digest = stored.digest.decode("utf-8", "surrogateescape")  # type: ignore[union-attr]
    _validate(given.name, labels, digest, stored.size_value(),
              stored.media_type.decode())  # type: ignore[union-attr]
    _add_image_lease(tx, ns, lease, given.name, labels)
    updated = codec.encode_time(_now(epoch))
    record.put(layout.UPDATED_AT_KEY, updated)
    pairs = _write_map(record, layout.LABELS_BUCKET, labels, stored.labels is not None)
    # containerd rewrites the annotations too: that drops empty values and nested buckets
    annotations = _write_map(record, layout.ANNOTATIONS_BUCKET, image_records.text_map(stored.annotations),
                             stored.annotations is not None)
    return RawImage(stored.name, stored.created, updated, pairs, annotations, True, stored.digest,
                    stored.media_type, stored.size)


def image_adaptor(image: Image):  # type: ignore[no-untyped-def]
    """Field lookup for filters: containerd's image adaptor."""
    def lookup(path: Sequence[str]) -> tuple[str, bool]:
        if not path:
            return "", False
        head = path[0]
        if head == "name":
            return image.name, bool(image.name)
        if head == "target":
            if len(path) < 2:
                return "", False
            if path[1] == "digest":
                return image.target.digest, bool(image.target.digest)
            if path[1] == "mediatype":
                return image.target.media_type, bool(image.target.media_type)
            return "", False
        if head == "labels":
            return _check_map(path[1:], image.labels)
        if head == "annotations":
            return _check_map(path[1:], image.target.annotations)
        return "", False
    return lookup


def _check_map(path: Sequence[str], values: Optional[dict[str, str]]) -> tuple[str, bool]:
    if not values:
        return "", False
    key = ".".join(path)
    if key in values:
        return values[key], True
    return "", False


def _bucket_path(tx: "bolt.Tx", path: Iterable[bytes]) -> Optional["bolt.Bucket"]:
    bucket: Any = tx
    for name in path:
        bucket = bucket.bucket(name)
        if bucket is None:
            return None
    return bucket  # type: ignore[no-any-return]


def _create_path(tx: "bolt.Tx", path: Iterable[bytes]) -> "bolt.Bucket":
    # A lookup is cheaper than create-if-not-exists and the buckets on the
    # way almost always exist; create only from the first one missing.
    bucket: Any = tx
    for name in path:
        child = bucket.bucket(name)
        bucket = child if child is not None else bucket.create_bucket_if_not_exists(name)
    return bucket  # type: ignore[no-any-return]


def _copy(image: Image) -> Image:
    """A copy whose maps the store may change (it drops empty values)."""
    target = image.target
    annotations = target.annotations
    labels = image.labels
    return Image(name=image.name, labels=None if labels is None else dict(labels),
                 target=Descriptor(media_type=target.media_type, digest=target.digest, size=target.size,
                                   annotations=None if annotations is None else dict(annotations)),
                 created_at=image.created_at, updated_at=image.updated_at)


def _engine() -> Any:
    """The engine module, for its error classes (imported on first failure:
    the store module itself is used without a file, by filters and tests)."""
    from .. import bolt
    return bolt


def _now(epoch: Optional[codec.Timestamp]) -> codec.Timestamp:
    """The time a write stamps: the 2.x source_date_epoch in UTC, else now."""
    return epoch.utc() if epoch is not None else codec.Timestamp.now()


# --- the store -------------------------------------------------------------

class ImageStore:
    """containerd's image store over a :class:`MetadataDB`."""

    def __init__(self, db: "MetadataDB", *, grouped_writes: bool = True) -> None:
        self.db = db
        self._write = db.batch if grouped_writes else db.update
        self._snapshots = image_records.Snapshots()

    def get(self, namespace: Optional[str], name: str) -> Image:
        return self.get_record(namespace, name).to_image()

    def get_record(self, namespace: Optional[str], name: str) -> RawImage:
        """One image as stored (checked like :meth:`get`), for callers that
        re-encode the bytes without decoding them."""
        ns = namespace_required(namespace)
        key = name.encode()
        # A snapshot taken at the last commit answers as a read transaction
        # begun now would, so the transaction is skipped: opening and closing
        # it was two thirds of the store's part of such a Get (6.4 against
        # 2.1 us per call in a loop).
        snapshot = self._snapshots.current(ns, self.db.committed_txid())
        if snapshot is not None:
            raw = snapshot.by_name().get(key)
            if raw is None:
                raise NotFound(f"image {go_quote(name)}")
            return raw

        # Otherwise one engine call reads the record's bucket in a read
        # transaction of its own: 11 us a Get in a loop, against 23 us for a
        # transaction, a Bucket per level and a walk made from Python.
        walk = self.db.walk_path(layout.images_path(ns) + (key,), 1) if name else None
        if walk is None:
            raise NotFound(f"image {go_quote(name)}")
        raw = image_records.parse(walk, -1, key)[0]
        raw.check()
        return raw

    def list(self, namespace: Optional[str], filters: Sequence[str] = ()) -> list[Image]:
        return [raw.to_image() for raw in self.list_records(namespace, filters)]

    def list_records(self, namespace: Optional[str], filters: Sequence[str] = ()) -> list[RawImage]:
        """The matching images as stored, in name order.

        One engine call copies the namespace's whole ``images`` bucket. Every
        record is checked (a damaged one fails the List, as in containerd,
        whether or not it matches), but only the fields a filter names are
        decoded. The checked records are kept until the next commit to the
        file (see :class:`image_records.Snapshots`).
        """
        ns = namespace_required(namespace)
        matcher = parse_all(list(filters))

        def read(tx: "bolt.Tx") -> list[RawImage]:
            snapshot = self._snapshots.current(ns, tx.id)
            if snapshot is not None:
                return snapshot.records
            images = _bucket_path(tx, layout.images_path(ns))
            if images is None:
                return []
            data = images.walk_bytes(2)
            records = image_records.parse(data, 0)
            for raw in records:
                raw.check()
            self._snapshots.keep(ns, tx.id, records, len(data))
            return records
        records = self.db.view(read)
        if not matcher.filters:
            return records
        return image_records.select(records, matcher)

    def create(self, namespace: Optional[str], image: Image, *, epoch: Optional[codec.Timestamp] = None,
               lease: Optional[str] = None) -> Image:
        ns = namespace_required(namespace)

        def write(tx: "bolt.Tx") -> Image:
            created = _copy(image)
            validate_image(created)
            images = _create_path(tx, layout.images_path(ns))
            _add_image_lease(tx, ns, lease, created.name, created.labels)
            key = created.name.encode()
            try:
                record = images.create_bucket(key)
            except Exception as exc:
                # as containerd's CreateBucket: an existing record is the only
                # failure that becomes AlreadyExists
                if isinstance(exc, _engine().BucketExists):
                    raise AlreadyExists(f"image {go_quote(created.name)}") from None
                raise
            created.created_at = created.updated_at = _now(epoch)
            _write_record(record, created, None, fresh=True)
            return created
        return self._write(write)

    def update(self, namespace: Optional[str], image: Image, fieldpaths: Sequence[str] = (), *,
               epoch: Optional[codec.Timestamp] = None, lease: Optional[str] = None) -> Image:
        return self.update_record(namespace, image, fieldpaths, epoch=epoch, lease=lease).to_image()

    def update_record(self, namespace: Optional[str], image: Image, fieldpaths: Sequence[str] = (), *,
                      epoch: Optional[codec.Timestamp] = None, lease: Optional[str] = None) -> RawImage:
        """:meth:`update`, answering with the record as written: for callers
        that frame its bytes without decoding them (the server)."""
        ns = namespace_required(namespace)
        if not image.name:
            raise InvalidArgument("image name is required for update")
        labels_only = _label_paths(fieldpaths)

        def write(tx: "bolt.Tx") -> RawImage:
            images = _create_path(tx, layout.images_path(ns))
            key = image.name.encode()
            record = images.bucket(key)
            if record is None:
                raise NotFound(f"image {go_quote(image.name)}")
            stored = image_records.read_one(key, record)
            if labels_only and _plain_record(stored):
                stored.check()  # the damage to_image() reports on the general path
                return _update_labels(tx, ns, lease, record, stored, image, fieldpaths, epoch)
            updated = stored.to_image()
            created_at = updated.created_at
            given = _copy(image)
            if fieldpaths:
                for path in fieldpaths:
                    if path.startswith("labels."):
                        label = path[len("labels."):]
                        if updated.labels is None:
                            updated.labels = {}
                        updated.labels[label] = (given.labels or {}).get(label, "")
                    elif path.startswith("annotations."):
                        annotation = path[len("annotations."):]
                        if updated.target.annotations is None:
                            updated.target.annotations = {}
                        updated.target.annotations[annotation] = \
                            (given.target.annotations or {}).get(annotation, "")
                    elif path == "labels":
                        updated.labels = given.labels
                    elif path == "target":
                        updated.target = given.target
                    elif path == "annotations":
                        updated.target.annotations = given.target.annotations
                    else:
                        raise InvalidArgument(
                            f"cannot update {go_quote(path)} field on image {go_quote(image.name)}")
            else:
                updated = given
            validate_image(updated)
            _add_image_lease(tx, ns, lease, updated.name, updated.labels)
            updated.created_at = created_at
            updated.updated_at = _now(epoch)
            return _write_record(record, updated, stored, fresh=False)
        return self._write(write)

    def delete(self, namespace: Optional[str], name: str, *, target_digest: Optional[str] = None,
               lease: Optional[str] = None) -> None:
        ns = namespace_required(namespace)

        def write(tx: "bolt.Tx") -> None:
            images = _bucket_path(tx, layout.images_path(ns))
            if images is None:
                raise NotFound(f"image {go_quote(name)}")
            _remove_image_lease(tx, ns, lease, name)
            if not name:
                raise NotFound(f"image {go_quote(name)}")
            key = name.encode()
            if target_digest:
                record = images.bucket(key)
                if record is None:
                    raise NotFound(f"image {go_quote(name)}")
                current = image_records.read_one(key, record).to_image().target.digest
                if current != target_digest:
                    raise NotFound(f"image {go_quote(name)} has target {current}, not {target_digest}")
            try:
                images.delete_bucket(key)
            except Exception as exc:
                engine = _engine()
                # a plain key where the record belongs reads as no image
                if isinstance(exc, (engine.BucketNotFound, engine.IncompatibleValue)):
                    raise NotFound(f"image {go_quote(name)}") from None
                raise
        self._write(write)


def _add_image_lease(tx: "bolt.Tx", ns: str, lease: Optional[str], name: str,
                     labels: Optional[dict[str, str]]) -> None:
    if not lease or GC_EXPIRE_LABEL not in (labels or {}):
        return
    record = _bucket_path(tx, (*layout.leases_path(ns), lease.encode()))
    if record is None:
        raise NotFound("lease does not exist")
    record.create_bucket_if_not_exists(layout.LEASE_IMAGES_BUCKET).put(name.encode(), b"")


def _remove_image_lease(tx: "bolt.Tx", ns: str, lease: Optional[str], name: str) -> None:
    if not lease:
        return
    images = _bucket_path(tx, (*layout.leases_path(ns), lease.encode(), layout.LEASE_IMAGES_BUCKET))
    if images is not None and name:
        images.delete(name.encode())
