"""Image records decoded straight from one packed subtree copy.

Reading an image through the bucket API costs a C crossing and a Python
object per bucket and key (about ten per image); List over thousands of
images spent almost all its time there. Here one ``Bucket.walk`` copies the
whole ``images`` bucket (or one record) in a single call, and one C pass
(native/pyext/records.c) cuts it into :class:`RawImage` records that keep
the stored bytes.

Nothing is decoded to ``str`` until someone asks: a List filter looks at
one or two fields, and the server re-frames the bytes as protobuf without
decoding them at all. :meth:`RawImage.to_image` gives the same
:class:`~boltimages.store.images.Image` the per-bucket reader gave, with the
same errors for the same damage (bad time, missing target bucket).
"""

from __future__ import annotations

import threading
from array import array
from bisect import bisect_left
from operator import attrgetter
from typing import TYPE_CHECKING, Any, Callable, NamedTuple, Optional, Sequence

from .._records import bind_record
from .._records import cut_bucket as _cut_bucket
from .._records import parse as parse_walk
from ..errors import DataCorruption, go_quote
from . import codec, layout, validation

if TYPE_CHECKING:
    from .. import bolt
    from .filters import AnyFilter, Selector
    from .images import Image


class RawImage:
    """One image record as stored: keys and values are the file's bytes.

    ``labels``/``annotations`` are (key, value) pairs in key order, None when
    the sub-bucket is absent; a nested bucket inside them reads as an empty
    value, as containerd's ForEach-based reader sees it.

    Records from :func:`parse` are left untracked by the cyclic collector
    and share the bytes objects that repeat between them (records.c says
    why): keep only bytes, tuples and lists of those in them.
    """

    __slots__ = ("name", "created", "updated", "labels", "annotations", "has_target",
                 "digest", "media_type", "size", "wire")

    def __init__(self, name: bytes, created: Optional[bytes] = None, updated: Optional[bytes] = None,
                 labels: Optional[list[tuple[bytes, bytes]]] = None,
                 annotations: Optional[list[tuple[bytes, bytes]]] = None, has_target: bool = False,
                 digest: Optional[bytes] = None, media_type: Optional[bytes] = None,
                 size: Optional[bytes] = None) -> None:
        self.name = name
        self.created = created
        self.updated = updated
        self.labels = labels
        self.annotations = annotations
        self.has_target = has_target
        self.digest = digest
        self.media_type = media_type
        self.size = size
        # the server's encoding of this record, kept while the record is cached
        self.wire: Optional[bytes] = None

    # -- checks the per-bucket reader made, in the same order ----------------
    def is_plain(self) -> bool:
        """Whether :meth:`check` has nothing to find: a target, and each time
        absent or in containerd's own 15-byte form. The C cutter answers the
        same for every record it cuts (records.c is_plain), so a List checks
        only the others (:func:`parse_checked`)."""
        return self.has_target and all(raw is None or codec.is_plain_time(raw)
                                       for raw in (self.created, self.updated))

    def check(self) -> None:
        """Raise DataCorruption where reading this record as an Image would."""
        for raw in (self.created, self.updated):
            if raw is not None and not codec.is_plain_time(raw):
                self._time(raw)
        if not self.has_target:
            # containerd: "image %q: unable to read target bucket" (an Unknown error)
            raise DataCorruption(f"image {go_quote(self.text_name())}: unable to read target bucket")

    def _time(self, raw: bytes) -> codec.Timestamp:
        try:
            return codec.decode_time(raw)
        except codec.CodecError as exc:
            raise DataCorruption(f"image {go_quote(self.text_name())}: {exc}") from None

    def text_name(self) -> str:
        return self.name.decode("utf-8", "surrogateescape")

    def seconds_nanos(self, raw: Optional[bytes]) -> Optional[tuple[int, int]]:
        """(Unix seconds, nanos) of a stored time; None when absent."""
        if raw is None:
            return None
        try:
            return codec.time_seconds_nanos(raw)
        except codec.CodecError as exc:
            raise DataCorruption(f"image {go_quote(self.text_name())}: {exc}") from None

    def size_value(self) -> int:
        """The target's size as containerd reads it (0 when absent or malformed)."""
        return 0 if self.size is None else codec.decode_varint_lenient(self.size)

    # -- the decoded form --------------------------------------------------------
    def to_image(self) -> "Image":
        from .images import Descriptor, Image
        self.check()
        image = Image(name=self.text_name())
        if self.created is not None:
            image.created_at = self._time(self.created)
        if self.updated is not None:
            image.updated_at = self._time(self.updated)
        image.labels = text_map(self.labels)
        image.target = Descriptor(
            media_type=_text(self.media_type), digest=_text(self.digest), size=self.size_value(),
            annotations=text_map(self.annotations))
        return image

    # -- filters -----------------------------------------------------------------
    def lookup(self, path: Sequence[str]) -> tuple[str, bool]:
        """Field lookup for filters, like containerd's image adaptor."""
        if not path:
            return "", False
        head = path[0]
        if head == "name":
            name = self.text_name()
            return name, bool(name)
        if head == "target":
            if len(path) < 2:
                return "", False
            if path[1] == "digest":
                digest = _text(self.digest)
                return digest, bool(digest)
            if path[1] == "mediatype":
                media_type = _text(self.media_type)
                return media_type, bool(media_type)
            return "", False
        if head == "labels":
            return _find(path[1:], self.labels)
        if head == "annotations":
            return _find(path[1:], self.annotations)
        return "", False


# --- writing -------------------------------------------------------------------


# the cutter fills RawImage's slots directly (records.c bind_record)
bind_record(RawImage)


def pairs_of(values: Optional[dict[str, str]]) -> Optional[list[tuple[bytes, bytes]]]:
    """A labels/annotations map as the (key, value) pairs a record holds, in
    key order; None for no map."""
    if values is None:
        return None
    return sorted((k.encode("utf-8", "surrogateescape"), v.encode("utf-8", "surrogateescape"))
                  for k, v in values.items())


def from_image(image: "Image") -> RawImage:
    """The record containerd's writeImage stores for ``image`` (an absent
    time is Go's zero time, as containerd marshals it)."""
    created = codec.encode_time(image.created_at or codec.GO_ZERO_TIME)
    updated = created if image.updated_at == image.created_at and image.updated_at is not None \
        else codec.encode_time(image.updated_at or codec.GO_ZERO_TIME)
    target = image.target
    return RawImage(image.name.encode("utf-8", "surrogateescape"), created, updated, pairs_of(image.labels),
                    pairs_of(target.annotations), True, target.digest.encode("utf-8", "surrogateescape"),
                    target.media_type.encode("utf-8", "surrogateescape"), codec.encode_varint(target.size))


def _write_pairs(record: "bolt.Bucket", name: bytes, pairs: Optional[list[tuple[bytes, bytes]]],
                 present: Optional[bool]) -> Optional[list[tuple[bytes, bytes]]]:
    """containerd's writeMap: delete the bucket; unless the map is empty,
    recreate it and store the non-empty values (so a map of empty values
    leaves an empty bucket, and a nested bucket read as "" is dropped, as
    containerd drops it). ``present``: whether the bucket is there now
    (None: look it up). Returns the pairs as stored, None for no bucket."""
    if present is None:
        present = record.bucket(name) is not None
    if present:
        record.delete_bucket(name)
    if not pairs:
        return None
    bucket = record.create_bucket(name)
    kept = [pair for pair in pairs if pair[1]]
    if len(kept) > _PUT_MANY_FROM:
        bucket.put_many(kept)
    else:
        for key, value in kept:
            bucket.put(key, value)
    return kept


#: below this many pairs a put per pair is cheaper than put_many's packing (a labels-only
#: Update with two labels: 13 µs in put_many against about 4 µs in two puts, measured with
#: bench/profile_store.py); records with many labels still go in one C call
_PUT_MANY_FROM = 8


def write_record(record: "bolt.Bucket", new: RawImage, stored: Optional[RawImage] = None, *,
                 fresh: bool = False) -> RawImage:
    """Store ``new`` into the record bucket ``record`` the way containerd's
    writeImage leaves it, and return the record as now stored. The one
    writer of image records: the store's Create/Update and the offline
    tools (through :func:`replace_record`) all end here.

    ``fresh``: the bucket was created in this transaction (it is empty).
    ``stored``: the record as read in this transaction, which lets the
    writer skip lookups it already knows the answer to and puts that would
    store the bytes already there (the stored tree ends up the same). A time
    that is None is not written (containerd reads a missing time as zero;
    an empty value would fail its whole List).
    """
    created, updated = new.created, new.updated
    if created is not None and (stored is None or stored.created != created):
        record.put(layout.CREATED_AT_KEY, created)
    if updated is not None:
        record.put(layout.UPDATED_AT_KEY, updated)
    labels = _write_pairs(record, layout.LABELS_BUCKET, new.labels,
                          False if fresh else None if stored is None else stored.labels is not None)
    annotations = _write_pairs(record, layout.ANNOTATIONS_BUCKET, new.annotations,
                               False if fresh else None if stored is None else stored.annotations is not None)
    digest = new.digest or b""
    media_type = new.media_type or b""
    size = new.size if new.size is not None else codec.encode_varint(0)
    written = RawImage(new.name, created, updated, labels, annotations, True, digest, media_type, size)
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


def validate(new: RawImage) -> None:
    """Raise InvalidArgument unless containerd would accept ``new`` as it is
    about to be written (rules: store/validation.py): validateImage on its
    decoded fields, then both times, which must be there and decode (a
    record containerd writes always carries them)."""
    validation.validate_image(new.text_name(), text_map(new.labels), _text(new.digest), new.size_value(),
                              _text(new.media_type))
    validation.validate_time("createdAt", new.created)
    validation.validate_time("updatedAt", new.updated)


def replace_record(images: "bolt.Bucket", new: RawImage) -> RawImage:
    """Write ``new`` as a whole new record under a namespace's ``images``
    bucket, replacing any record of that name: the offline tools' writer
    (import, copy, tag). It refuses (InvalidArgument, nothing touched) a
    record containerd would refuse; tools validate earlier too, with
    :func:`validate`, so a dry run refuses the same records."""
    validate(new)
    if images.bucket(new.name) is not None:
        images.delete_bucket(new.name)
    return write_record(images.create_bucket(new.name), new, fresh=True)


def same_content(a: RawImage, b: RawImage) -> bool:
    """Whether two records hold the same image apart from their names, as
    containerd would read them back: labels/annotations compare without
    empty values (an empty or absent bucket reads as no map), sizes by
    value, times byte for byte (their zone is part of them)."""
    def kept(pairs: Optional[list[tuple[bytes, bytes]]]) -> list[tuple[bytes, bytes]]:
        return sorted(pair for pair in pairs or () if pair[1])
    return (a.digest or b"", a.media_type or b"", a.size_value(), kept(a.labels), kept(a.annotations),
            a.created, a.updated) == (b.digest or b"", b.media_type or b"", b.size_value(), kept(b.labels),
                                      kept(b.annotations), b.created, b.updated)


def _text(raw: Optional[bytes]) -> str:
    return "" if raw is None else raw.decode("utf-8", "surrogateescape")


def is_utf8(data: Optional[bytes]) -> bool:
    """Whether stored bytes are valid UTF-8 (None counts: nothing to check)."""
    if data is None or data.isascii():
        return True
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def text_map(pairs: Optional[list[tuple[bytes, bytes]]]) -> Optional[dict[str, str]]:
    """Stored (key, value) pairs as the str map an Image carries."""
    if pairs is None:
        return None
    return {k.decode("utf-8", "surrogateescape"): v.decode("utf-8", "surrogateescape") for k, v in pairs}


def _find(path: Sequence[str], pairs: Optional[list[tuple[bytes, bytes]]]) -> tuple[str, bool]:
    if not pairs:
        return "", False
    # Filter text never holds lone surrogates, so comparing its UTF-8 with
    # the stored bytes equals comparing the decoded strings.
    try:
        key = ".".join(path).encode("utf-8")
    except UnicodeEncodeError:
        return "", False
    for k, v in pairs:
        if k == key:
            return v.decode("utf-8", "surrogateescape"), True
    return "", False


def parse(walk: bytes, top: int, name: Optional[bytes] = None) -> list[RawImage]:
    """Records in a ``bolt_bucket_walk`` copy, in key order.

    ``top`` is the depth of the image-name entries (0 when walking the
    ``images`` bucket), or -1 for a walk of one record's own bucket, whose
    ``name`` is then given. What counts as a record and a field is what
    containerd's reader takes: a plain key where an image bucket belongs is
    skipped; createdat/updatedat are plain values; labels and annotations
    keep their entries in key order (a nested bucket there reads as an
    empty value, as ForEach sees it); the target's digest, mediatype and
    size are plain values. The cutting is done in C (native/pyext/records.c:
    the Python loop cost about 1.5 us per entry, 170 ms of a 10,000-image List).
    """
    return parse_walk(walk, top, name, RawImage)  # type: ignore[no-any-return]


def parse_checked(walk: bytes, top: int, name: Optional[bytes] = None) -> list[RawImage]:
    """:func:`parse`, every record checked (the first damaged one in key
    order raises, as RawImage.check does): the cutter names the records that
    are not plain, and only those are checked here."""
    suspects: list[RawImage] = []
    records: list[RawImage] = parse_walk(walk, top, name, RawImage, suspects)
    for raw in suspects:
        raw.check()
    return records


def read_checked(images: "bolt.Bucket") -> tuple[list[RawImage], int]:
    """Every record of a namespace's ``images`` bucket, in key order and
    checked like :func:`parse_checked`, with the size in bytes of the walk
    copy they were cut from (what a snapshot of them is charged).

    The records are cut as the engine walks the pages, with no copy of the
    bucket in between: for 10,000 images that copy was 4.6 MB grown,
    copied again into bytes and freed on every cold List, 6 to 14 ms of it
    (page faults of fresh memory, mostly). bench/cold_list.py measures the
    stages."""
    records, suspects, walked = _cut(images)
    for raw in suspects:
        raw.check()
    return records, walked


def read_all(images: "bolt.Bucket") -> list[RawImage]:
    """Every record of a namespace's ``images`` bucket, in key order, not
    checked (the offline tools report damaged records themselves); cut as
    the engine walks, like :func:`read_checked`."""
    return _cut(images)[0]


def _cut(images: "bolt.Bucket") -> tuple[list[RawImage], list[RawImage], int]:
    """The records of ``images`` cut as the engine walks it, the ones that
    are not plain, and the walk copy's size in bytes."""
    return images.walk_native(  # type: ignore[no-any-return]
        lambda walk_each, bucket: _cut_bucket(walk_each, bucket, RawImage))


def read_one(name: bytes, record: "bolt.Bucket") -> RawImage:
    """One record from its own bucket."""
    return parse(record.walk_bytes(1), -1, name)[0]


def select(records: list[RawImage], matcher: "AnyFilter") -> list[RawImage]:
    """The records any of the request's filters matches."""
    tests = [[_selector_test(selector) for selector in f.selectors] for f in matcher.filters]
    if len(tests) == 1 and len(tests[0]) == 1:
        test = tests[0][0]  # one selector, as most Lists send: no loops around it
        return [raw for raw in records if test(raw)]
    return [raw for raw in records if any(all(test(raw) for test in each) for each in tests)]


def _selector_test(selector: "Selector") -> Callable[[RawImage], bool]:
    """One selector as a test of a record.

    A List with a filter on a label tests every record of the namespace, and
    the generic path (Selector.match over RawImage.lookup) joins and encodes
    the key again for each of them: about 4 us a record, 40 ms of a filtered
    List of 10,000 images. For ``labels.<key>`` and ``annotations.<key>``
    with ``==``, ``!=`` or presence, the key and value are encoded once here
    and compared with the stored bytes, which gives the same answer (filter
    text never holds lone surrogates, so its UTF-8 equals the stored bytes
    exactly when the decoded strings are equal). ``~=`` on any field the
    adaptor knows searches the stored bytes (an absent field is "", as the
    adaptor answers), remembering each distinct value's answer: media types
    and digests repeat across a namespace, and one RE2 search costs about
    1.5 us. Everything else takes the generic path.
    """
    from .filters import OP_EQUAL, OP_MATCHES, OP_NOT_EQUAL, OP_PRESENT, regex_search_stored

    path, operator = selector.fieldpath, selector.operator
    if operator == OP_MATCHES:
        regex = selector.compiled_regex()
        stored = _stored_field(path)
        if regex is None:
            return lambda raw: False  # containerd: a pattern that does not compile matches nothing
        if stored is None:
            match = selector.match
            return lambda raw: match(raw.lookup)
        seen: dict[bytes, bool] = {}

        def search(raw: RawImage) -> bool:
            data = stored(raw) or b""  # type: ignore[misc]
            hit = seen.get(data)
            if hit is None:
                hit = seen[data] = regex_search_stored(regex, data)
            return hit
        return search
    if len(path) < 2 or path[0] not in ("labels", "annotations") or \
            operator not in (OP_PRESENT, OP_EQUAL, OP_NOT_EQUAL):
        match = selector.match
        return lambda raw: match(raw.lookup)
    try:
        want = selector.value.encode("utf-8")
    except UnicodeEncodeError:
        match = selector.match
        return lambda raw: match(raw.lookup)
    value = _stored_field(path)
    if value is None:
        match = selector.match
        return lambda raw: match(raw.lookup)

    if operator == OP_PRESENT:
        return lambda raw: value(raw) is not None  # type: ignore[misc]
    if operator == OP_EQUAL:
        return lambda raw: value(raw) == want  # type: ignore[misc]
    return lambda raw: (value(raw) or b"") != want  # type: ignore[misc]


def _stored_field(path: Sequence[str]) -> Optional[Callable[[RawImage], Optional[bytes]]]:
    """The stored bytes a filter path names, as a getter (None: the field
    is absent or empty, as :meth:`RawImage.lookup` reports it), or None when
    the path needs the generic lookup. Mirrors :meth:`RawImage.lookup`."""
    if path and path[0] == "name":  # containerd's adaptor ignores what follows "name"
        return lambda raw: raw.name or None
    if len(path) >= 2 and path[0] == "target":
        if path[1] == "digest":
            return lambda raw: raw.digest or None
        if path[1] == "mediatype":
            return lambda raw: raw.media_type or None
        return None
    if len(path) >= 2 and path[0] in ("labels", "annotations"):
        try:
            key = ".".join(path[1:]).encode("utf-8")
        except UnicodeEncodeError:
            return None
        labels = path[0] == "labels"

        def value(raw: RawImage) -> Optional[bytes]:
            for k, v in (raw.labels if labels else raw.annotations) or ():
                if k == key:
                    return v
            return None
        return value
    return None


class ImageChange(NamedTuple):
    """What one image write changed, as its function declares it to the db
    (MetadataDB.declare) so that kept snapshots can follow the commit."""

    namespace: str
    name: bytes
    #: the record exactly as now stored; None: deleted
    record: Optional[RawImage]
    #: this write created the namespace's images bucket (the namespace had no image before)
    new_bucket: bool


class NoImageChange(NamedTuple):
    """Declared by a write that leaves every image record as it is (lease
    bookkeeping, say): kept snapshots stay true through its commit."""

    what: str


#: bytes of each entry's header in a walk copy (BOLT_WALK_HEADER_SIZE in native/bolt.h)
_WALK_HEADER = 16


def walk_size(raw: RawImage) -> int:
    """The bytes ``raw`` takes in a walk copy of its images bucket: the
    measure snapshots are budgeted by (exact for a record as written; a
    stored record with keys containerd does not read counts without them)."""
    size = _WALK_HEADER + len(raw.name)
    for value, key_size in ((raw.created, _CREATED_AT), (raw.updated, _UPDATED_AT)):
        if value is not None:
            size += key_size + len(value)
    for pairs, key_size in ((raw.labels, _LABELS), (raw.annotations, _ANNOTATIONS)):
        if pairs is not None:
            size += key_size + _WALK_HEADER * len(pairs)
            for k, v in pairs:
                size += len(k) + len(v)
    if raw.has_target:
        size += _TARGET
        for value, key_size in ((raw.digest, _DIGEST), (raw.media_type, _MEDIA_TYPE), (raw.size, _SIZE)):
            if value is not None:
                size += key_size + len(value)
    return size


# each field's header and key in a walk copy
_CREATED_AT, _UPDATED_AT, _LABELS, _ANNOTATIONS, _TARGET, _DIGEST, _MEDIA_TYPE, _SIZE = (
    _WALK_HEADER + len(key) for key in (
        layout.CREATED_AT_KEY, layout.UPDATED_AT_KEY, layout.LABELS_BUCKET, layout.ANNOTATIONS_BUCKET,
        layout.TARGET_BUCKET, layout.DIGEST_KEY, layout.MEDIA_TYPE_KEY, layout.SIZE_KEY))


_name_of = attrgetter("name")

#: Changes to one namespace, applied at once, up to which each is placed by
#: a binary search and a list insert/delete; more are merged by one sort of
#: the kept and new records (two sorted runs: linear). At 10,000 records an
#: insert moves 80 KB (about 5 us), so the 10,000 Creates of a benchmark
#: step would cost seconds placed one by one.
_PLACE_ONE_BY_ONE = 16

#: A Get costs about 9 us more through the file than through a snapshot's
#: name index, and building the index costs about 0.1 us a record (1.07 ms
#: for 10,000): build it once the Gets that missed it would have paid for
#: it, so a Get right after a write (which leaves the next snapshot without
#: an index) does not pay for the whole namespace.
_RECORDS_PER_MISSED_GET = 84


#: Serializes the one moment a snapshot's pending changes become its records,
#: so every reader of the snapshot gets the same list object.
_APPLY_LOCK = threading.Lock()

#: one commit's changes to a namespace: {name: (record or None for deleted,
#: its walk size)}; the size is worked out once, when the commit is heard of
#: (applying 10,000 Creates spent 9.6 of its 15 ms sizing the records again)
_Named = dict[bytes, tuple[Optional[RawImage], int]]

#: (older changes or None, one commit's changes): a snapshot's changes not
#: yet applied, newest last, shared by the snapshots that follow it
_Chain = tuple[Optional["_Chain"], _Named]  # type: ignore[misc]


class Snapshot:
    """One namespace's checked records as of commit ``txid`` (see Snapshots).

    A snapshot that followed commits (Snapshots.advance) holds the records
    it started from and the changes since, and applies them the first time
    its records are asked for: a write then costs a few microseconds
    whatever the namespace's size, where copying and patching a list of
    10,000 records at each commit cost about 30 (and the writes of a whole
    benchmark step are applied at once, by one merge)."""

    __slots__ = ("txid", "_records", "_pending", "size", "_by_name", "_missed", "answer", "answer_sizes",
                 "_base_answer", "_applied_from", "_changed")

    def __init__(self, txid: int, records: Optional[list[RawImage]], size: int,
                 pending: Optional[tuple[list[RawImage], int, _Chain]] = None) -> None:
        self.txid = txid
        #: None while ``_pending`` (base records, their size, changes) is not applied
        self._records = records
        self._pending = pending
        #: bytes of the records in walk form; an upper bound while changes are pending
        self.size = size
        self._by_name: Optional[dict[bytes, RawImage]] = None
        self._missed = 0
        #: the whole bucket as a List answer, framed by the server the first
        #: time it lists without a filter (like each record's ``wire``), so a
        #: List of a file that has not changed since costs a lookup; and the
        #: length of each record's part of it (set first: whoever sees the
        #: answer sees its sizes)
        self.answer: Optional[bytes] = None
        self.answer_sizes: Optional[array] = None
        #: while changes are pending: (answer, sizes) framed from the records
        #: they apply to, when there was one, for spliced_answer
        self._base_answer: Optional[tuple[bytes, array]] = None
        #: once those changes are applied: (the records they applied to, their
        #: size, the changes), while few enough to splice
        self._applied_from: Optional[tuple[list[RawImage], int, _Named]] = None
        #: how many changes ``_pending`` holds
        self._changed = 0

    @property
    def records(self) -> list[RawImage]:
        """The records in name order (never changed once given out)."""
        records = self._records
        if records is None:
            records = self._apply()
        return records

    def _apply(self) -> list[RawImage]:
        base, base_size, chain = self._pending  # type: ignore[misc]
        changes = _merged(chain)
        records, size = _applied(base, base_size, changes)
        with _APPLY_LOCK:
            if self._records is None:
                if self._base_answer is not None and len(changes) <= _PLACE_ONE_BY_ONE:
                    # a Get applied them: a List, or the next write's snapshot, may still splice
                    self._applied_from = (base, base_size, changes)
                # _records before _pending: see Snapshots._followed
                self._records, self.size, self._pending = records, size, None
            return self._records

    def better_read_again(self) -> bool:
        """Whether reading the bucket again beats applying the pending changes.

        Records a write made lie wherever the heap put them between the
        request's own objects; records the cutter makes in one walk lie
        together. After 10,000 Creates into a new namespace, a filtered
        List scanned the applied records in 9.6 ms against 3.5 for read ones,
        and framing them all took 5.8 against 2.2 ms, while reading the
        bucket (7 ms) costs about what applying the changes does (7.3 ms).
        So once the changes are more than an eighth of the records, the
        next List reads the bucket; a few writes between Lists are applied."""
        pending = self._pending
        return pending is not None and self._changed * _READ_AGAIN_FRACTION > len(pending[0])

    def keep_answer(self, records: list[RawImage], answer: bytes, sizes: array) -> None:
        """Keep ``answer``, the List answer framed from ``records`` (``sizes``:
        each record's part of it, in order), if those are this snapshot's
        records (without applying pending changes to find out: then they
        are not)."""
        if self._records is records:
            self.answer_sizes = sizes
            self.answer = answer
            # what an answer was spliced from is not needed once there is one
            self._base_answer = self._applied_from = None

    def spliced_answer(self, frame: Callable[[RawImage], Optional[bytes]]) -> Optional[bytes]:
        """The List answer, kept or made from the answer framed before the
        pending changes, with each changed record framed by ``frame`` (None:
        it cannot be, then neither can this) and put in place; None when
        there is neither, or the changes are too many for splicing to pay.

        Why: a List right after a write used to frame every record again,
        4.5 ms of CPU for 10,000 images in the server (the records, read
        between two Lists, are out of the cache by then), where copying the
        earlier answer around the one changed record takes about 0.3."""
        answer = self.answer
        if answer is not None:
            return answer
        based = self._base_answer
        if based is None:
            return None
        pending = self._pending  # read before _applied_from, which _apply sets first
        if pending is not None:
            base, _, chain = pending
            changes = _merged(chain)
        elif self._applied_from is not None:
            base, _, changes = self._applied_from
        else:
            return None
        if len(changes) > _PLACE_ONE_BY_ONE:
            return None
        edits = []
        for name in sorted(changes):
            raw = changes[name][0]
            at = bisect_left(base, name, key=_name_of)
            present = at < len(base) and base[at].name == name
            framed = None
            if raw is not None:
                framed = frame(raw)
                if framed is None:
                    return None
            elif not present:
                continue
            edits.append((at, present, framed))
        answer, sizes = spliced(based[0], based[1], edits)
        # apply the changes too, so the next write's snapshot starts from
        # these records and this answer
        self.keep_answer(self.records, answer, sizes)
        return answer

    def by_name(self) -> Optional[dict[bytes, RawImage]]:
        """The records by name; None while building that index would still
        cost more than the lookups it has been asked for (then read the
        record from the file)."""
        if self._by_name is None:
            self._missed += 1
            if self._missed * _RECORDS_PER_MISSED_GET < len(self.records):
                return None
            self._by_name = {raw.name: raw for raw in self.records}
        return self._by_name

    def moved(self, txid: int) -> "Snapshot":
        """The same records as of a later commit that left them as they are."""
        pending = self._pending  # read first: see _followed
        records = self._records
        later = Snapshot(txid, records, self.size, None if records is not None else pending)
        later._by_name, later._missed = self._by_name, self._missed
        later.answer_sizes, later.answer, later._base_answer = self.answer_sizes, self.answer, self._base_answer
        later._applied_from = self._applied_from
        later._changed = self._changed
        return later

    def followed(self, txid: int, named: _Named) -> "Snapshot":
        """A new snapshot: this one's records with one commit's changes
        (``named``) applied, when first read. This one is left as it is, for
        readers in other threads."""
        # Read _pending before _records: _apply sets _records first, so a
        # None _records read second means _pending was still there.
        pending = self._pending
        since = self._applied_from  # read before _records: _apply sets it first
        records = self._records
        based: Optional[tuple[bytes, array]] = None
        if records is not None:
            base, base_size, chain, changed = records, self.size, None, 0
            answer = self.answer  # read before its sizes: see keep_answer
            if answer is not None:
                based = (answer, self.answer_sizes)  # type: ignore[assignment]
            elif since is not None and len(since[2]) + len(named) <= _PLACE_ONE_BY_ONE:
                # applied (by a Get) but not listed since: follow on from the
                # records the last answer framed, so the next List can splice
                base, base_size, changes = since
                chain, changed, based = (None, changes), len(changes), self._base_answer
        else:
            base, base_size, chain = pending  # type: ignore[misc]
            changed = self._changed
            based = self._base_answer
        # an upper bound until applied: a replaced or deleted record still counts
        size = self.size
        for _, added in named.values():
            size += added
        later = Snapshot(txid, None, size, (base, base_size, (chain, named)))
        later._changed = changed + len(named)
        later._base_answer = based  # type: ignore[assignment]
        return later


#: pending changes beyond 1/this of the records they apply to: read the bucket again
_READ_AGAIN_FRACTION = 8

#: the records of a namespace without an images bucket
_EMPTY = Snapshot(0, [], 0)


def _merged(chain: Optional[_Chain]) -> _Named:
    """A chain's changes as one, the newest of each name winning."""
    parts = []
    link = chain
    while link is not None:
        link, named = link
        parts.append(named)
    changes: _Named = {}
    for named in reversed(parts):
        changes.update(named)
    return changes


def spliced(answer: bytes, sizes: array, edits: Sequence[tuple[int, bool, Optional[bytes]]]
            ) -> tuple[bytes, array]:
    """A List answer of records framed in ``answer`` (each record's part:
    ``sizes``) with ``edits`` made: (index in the old records, whether the
    record there goes, the framed record put there or None), in index order;
    and the new answer's sizes."""
    view = memoryview(answer)
    pieces: list[Any] = []
    new_sizes = array("Q")
    at = offset = 0  # the old record next to copy, and where it starts
    for index, removed, framed in edits:
        if not at <= index <= len(sizes) - removed:
            raise ValueError(f"splice edit at {index} out of order or range ({len(sizes)} records)")
        kept = sizes[at:index]
        span = sum(kept)  # 0.15 ms for 9,000 sizes
        pieces.append(view[offset:offset + span])
        new_sizes.extend(kept)
        offset += span
        at = index
        if removed:
            offset += sizes[at]
            at += 1
        if framed is not None:
            pieces.append(framed)
            new_sizes.append(len(framed))
        if offset > len(answer):
            raise ValueError("splice: the sizes run past the answer")
    pieces.append(view[offset:])
    new_sizes.extend(sizes[at:])
    return b"".join(pieces), new_sizes


def _applied(records: list[RawImage], size: int, changes: _Named) -> tuple[list[RawImage], int]:
    """``records`` (of walk size ``size``) with ``changes`` applied, as a new
    list in name order, and its size."""
    if len(changes) <= _PLACE_ONE_BY_ONE:
        records = list(records)
        for name, (raw, added) in changes.items():
            at = bisect_left(records, name, key=_name_of)
            present = at < len(records) and records[at].name == name
            if present:
                size -= walk_size(records[at])
            if raw is None:
                if present:
                    del records[at]
                continue
            size += added
            if present:
                records[at] = raw
            else:
                records.insert(at, raw)
        return records, size
    kept = []
    for raw in records:
        if raw.name in changes:
            size -= walk_size(raw)
        else:
            kept.append(raw)
    for raw, added in changes.values():
        if raw is not None:
            size += added
            kept.append(raw)
    kept.sort(key=_name_of)
    return kept, size


class Snapshots:
    """Checked records of whole ``images`` buckets, valid for one file state.

    A read transaction's id is the id of the last committed write: any
    commit to the file (ours, a batch, another store's) gives later readers
    a new id, so a snapshot taken under id N describes the bucket exactly as
    long as readers still see N. Nothing else can change the file while we
    hold its lock. Records are never mutated after they are kept (only
    their lazily computed ``wire``, and the snapshot's ``answer``, are filled
    in, the same by every caller).

    Our own commits carry notes (see store/db.py): :meth:`advance` hears of
    each, and when every change is declared as :class:`ImageChange` moves the
    snapshots of commit N to N+1, untouched namespaces as they are and
    touched ones as new snapshots with the written records in place. So a
    List right after a write frames the records it kept instead of reading,
    parsing and checking the whole bucket again.

    A List right after such writes needs no framing either when an answer
    was kept before them: Snapshot.spliced_answer copies that answer around
    the written records, framed alone.

    Memory is bounded by the packed size of what is kept; a namespace
    larger than the budget is simply read afresh each time. The framed
    answers come on top: each is smaller than the packed records it frames
    (2.7 against 4.6 MB for 10,000 images), so at most twice that again
    (a snapshot holds its own answer, or the one it would be spliced from,
    never both once kept).
    """

    def __init__(self, budget: int = 32 << 20) -> None:
        self.budget = budget
        self._lock = threading.Lock()
        self._by_ns: dict[str, Snapshot] = {}
        #: the newest commit advance() heard of: a read older than it is not kept
        self._txid = 0

    def current(self, namespace: str, txid: int) -> Optional[Snapshot]:
        snapshot = self._by_ns.get(namespace)
        if snapshot is None:
            return None
        if snapshot.txid == txid:
            return snapshot
        if snapshot.txid < txid - 1:
            # the file moved on: free the stale records now, not at the next
            # List (one commit behind is left: advance() may be on its way)
            with self._lock:
                if self._by_ns.get(namespace) is snapshot:
                    self._by_ns = {ns: s for ns, s in self._by_ns.items() if ns != namespace}
        return None

    def keep(self, namespace: str, txid: int, records: list[RawImage], size: int) -> None:
        if size > self.budget:
            return
        with self._lock:
            if txid < self._txid:
                return  # read before a commit we already heard of: out of date
            old = self._by_ns.get(namespace)
            if old is not None and old.txid > txid:
                return  # a reader of a newer state got here first
            # stale snapshots of other namespaces go first, then any others
            by_ns = {ns: s for ns, s in self._by_ns.items() if ns != namespace and s.txid >= txid}
            total = size + sum(s.size for s in by_ns.values())
            for ns in list(by_ns):
                if total <= self.budget:
                    break
                total -= by_ns.pop(ns).size
            by_ns[namespace] = Snapshot(txid, records, size)
            self._by_ns = by_ns

    def advance(self, txid: int, payloads: Optional[list[Any]]) -> None:
        """Commit ``txid`` was made with these declared changes (None: not
        all declared). Registered with MetadataDB.add_commit_listener, so it
        runs once per commit, in order, before any other commit."""
        with self._lock:
            if txid > self._txid:
                self._txid = txid
            changes: dict[str, tuple[bool, dict[bytes, Optional[RawImage]]]] = {}
            for change in payloads or ():
                if type(change) is not ImageChange:
                    if type(change) is NoImageChange:
                        continue
                    payloads = None
                    break
                ns, name, record, new_bucket = change
                entry = changes.get(ns)
                if entry is None:
                    # the first change to a namespace tells whether it had an images bucket before
                    entry = changes[ns] = (new_bucket, {})
                entry[1][name] = record
            kept = self._by_ns
            if payloads is None:
                # changes unknown: everything kept is out of date
                if kept:
                    self._by_ns = {ns: s for ns, s in kept.items() if s.txid >= txid}
                return
            by_ns: dict[str, Snapshot] = {}
            for ns, snapshot in kept.items():
                if snapshot.txid >= txid:
                    by_ns[ns] = snapshot  # read after this commit: already has its changes
                elif snapshot.txid == txid - 1 and ns not in changes:
                    by_ns[ns] = snapshot.moved(txid)
            touched = []
            for ns, (new_bucket, named) in changes.items():
                if ns in by_ns:
                    continue
                if new_bucket:
                    base = _EMPTY  # no bucket before: no image before
                else:
                    base = kept.get(ns)  # type: ignore[assignment]
                    if base is None or base.txid != txid - 1:
                        continue  # nothing kept of it as it was: read afresh when asked
                changed = base.followed(txid, {name: (raw, 0 if raw is None else walk_size(raw))
                                               for name, raw in named.items()})
                if changed.size <= self.budget:
                    by_ns[ns] = changed
                    touched.append(ns)
            if by_ns or kept:
                total = sum(s.size for s in by_ns.values())
                # over budget: the namespaces that grew go first, then any others
                for ns in [*touched, *by_ns]:
                    if total <= self.budget:
                        break
                    if ns in by_ns:
                        total -= by_ns.pop(ns).size
                self._by_ns = by_ns
