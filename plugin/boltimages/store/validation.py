"""containerd's validation rules, in one place, for every path that writes and for ``check``.

The server's stores, the offline tools (import, copy, tag, label) and
``boltimages check`` all call this module, so a record one of them writes is a
record the others (and containerd) accept. Each rule is containerd's own
(unchanged from 1.6 through 2.x), with containerd's message text, because
clients show it verbatim (where 1.7/2.x reworded one, the label size, theirs):

* identifiers (namespace names; containerd's ``identifiers.Validate``):
  1..76 bytes of alphanumeric runs joined by single ``.``, ``_`` or ``-``;
* labels (``labels.Validate``): key and value together at most 4096 bytes;
* images (``metadata/images.go`` validateImage): a name, valid labels, a
  target digest go-digest's ``Validate`` accepts, a size above zero and a
  media type;
* stored times (``time.Time.UnmarshalBinary``): what containerd can decode.

:func:`image_problems` applies the same rules to a record as the one reader
(store/image_records.py) reads it, for ``inspect``; :func:`image_record_problems`
adds what containerd's reader needs from the layout (a ``target`` bucket,
buckets where it expects buckets), for ``check``. The one writer refuses a
record these rules refuse (``image_records.validate``).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Container, Mapping, Optional

from ..errors import FailedPrecondition, InvalidArgument, go_quote
from . import codec, layout

if TYPE_CHECKING:
    from .image_records import RawImage

# --- identifiers (namespaces) ------------------------------------------------

#: containerd's identifiers.maxLength (compared with the length in bytes)
MAX_IDENTIFIER_LENGTH = 76
#: the pattern text exactly as containerd prints it in error messages
IDENTIFIER_PATTERN_TEXT = r"^[A-Za-z0-9]+(?:[._-](?:[A-Za-z0-9]+))*$"
# Go's "$" in RE2 matches only at the very end (no trailing-newline slack),
# hence fullmatch over an ASCII-only class
_IDENTIFIER = re.compile(r"[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*")


def _utf8(text: str) -> bytes:
    """``text`` as the bytes Go would measure: names read from a file keep
    undecodable bytes as surrogates (surrogateescape); text from JSON may
    hold lone surrogates, which are measured as their 3-byte forms."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass")


def validate_identifier(value: str) -> None:
    """Raise InvalidArgument unless ``value`` is a valid containerd identifier."""
    if not value:
        raise InvalidArgument("identifier must not be empty")
    if len(_utf8(value)) > MAX_IDENTIFIER_LENGTH:
        raise InvalidArgument(
            f"identifier {go_quote(value)} greater than maximum length ({MAX_IDENTIFIER_LENGTH} characters)")
    if not _IDENTIFIER.fullmatch(value):
        raise InvalidArgument(f"identifier {go_quote(value)} must match {IDENTIFIER_PATTERN_TEXT}")


def validate_namespace(value: str) -> None:
    """A namespace name, with the prefix containerd's namespace checks add."""
    try:
        validate_identifier(value)
    except InvalidArgument as exc:
        raise exc.wrap("namespace validation") from None


#: namespaces already found valid: every request names one, and a server
#: sees few, so the pattern runs once per name instead of once per request
_VALID_NAMESPACES: set[str] = set()
_VALID_NAMESPACES_MAX = 1024


def namespace_required(value: Optional[str]) -> str:
    """containerd's NamespaceRequired: missing/empty → FailedPrecondition, malformed → InvalidArgument."""
    if value in _VALID_NAMESPACES:
        return value  # type: ignore[return-value]
    if not value:
        raise FailedPrecondition("namespace is required")
    validate_namespace(value)
    if len(_VALID_NAMESPACES) >= _VALID_NAMESPACES_MAX:
        _VALID_NAMESPACES.clear()
    _VALID_NAMESPACES.add(value)
    return value


# --- labels --------------------------------------------------------------------

#: containerd's limit on len(key) + len(value) of one label, in bytes
MAX_LABEL_SIZE = 4096
#: how many bytes of an oversize key containerd 1.7/2.x quote in the error (1.6 quoted 10
#: and no length; we follow 2.x, which most nodes run)
_LABEL_KEY_PREVIEW = 64


def validate_label(key: str, value: str) -> None:
    """containerd's labels.Validate: key and value together at most 4096 bytes."""
    kb, vb = _utf8(key), _utf8(value)
    total = len(kb) + len(vb)
    if total > MAX_LABEL_SIZE:
        shown = kb[:_LABEL_KEY_PREVIEW].decode("utf-8", "replace")
        raise InvalidArgument(
            f"label key and value length ({total} bytes) greater than maximum size "
            f"({MAX_LABEL_SIZE} bytes), key: {shown}")


def validate_labels(labels: Optional[Mapping[str, str]], context: str) -> None:
    """Every label of an object; ``context`` is containerd's prefix ("image.Labels", ...)."""
    for key, value in (labels or {}).items():
        try:
            validate_label(key, value)
        except InvalidArgument as exc:
            raise exc.wrap(context) from None


# --- digests -------------------------------------------------------------------

#: digest algorithms go-digest can compute, with their hex length
_DIGEST_HEX_LENGTH = {"sha256": 64, "sha384": 96, "sha512": 128}
_DIGEST = re.compile(r"[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+")
_LOWER_HEX = re.compile(r"[a-f0-9]+")


def digest_problem(digest: str) -> Optional[str]:
    """None when go-digest's Digest.Validate accepts ``digest``, else its error text."""
    i = digest.find(":")
    if i <= 0 or i + 1 == len(digest):
        return "invalid checksum digest format"
    algorithm, encoded = digest[:i], digest[i + 1:]
    if algorithm not in _DIGEST_HEX_LENGTH:
        if not _DIGEST.fullmatch(digest):
            return "invalid checksum digest format"
        return "unsupported digest algorithm"
    if len(_utf8(encoded)) != _DIGEST_HEX_LENGTH[algorithm]:
        return "invalid checksum digest length"
    if not _LOWER_HEX.fullmatch(encoded):
        return "invalid checksum digest format"
    return None


# --- images --------------------------------------------------------------------

def validate_target(digest: str, size: int, media_type: str) -> None:
    """containerd's validateTarget: the three descriptor fields it stores."""
    reason = digest_problem(digest)
    if reason is not None:
        raise InvalidArgument(f"Target.Digest {go_quote(digest)} invalid: {reason}")
    if size <= 0:
        raise InvalidArgument("Target.Size must be greater than zero")
    if not media_type:
        raise InvalidArgument("Target.MediaType must be set")


def validate_image(name: str, labels: Optional[Mapping[str, str]], digest: str, size: int,
                   media_type: str) -> None:
    """containerd's validateImage, in its order: what Create and Update check before writing."""
    if not name:
        raise InvalidArgument("image name must not be empty")
    validate_labels(labels, "image.Labels")
    validate_target(digest, size, media_type)


# --- stored times --------------------------------------------------------------

def time_problem(data: Optional[bytes]) -> Optional[str]:
    """Why containerd's time.UnmarshalBinary refuses ``data`` (None: it decodes)."""
    if data is None:
        return "missing"
    try:
        codec.decode_time(data)
    except codec.CodecError as exc:
        return str(exc)
    return None


def validate_time(field: str, data: Optional[bytes]) -> None:
    """Refuse a time a writer is about to store that containerd cannot read back."""
    problem = time_problem(data)
    if problem is not None:
        raise InvalidArgument(f"{field}: {problem}")


# --- records as stored (check) ---------------------------------------------------

def show_key(key: bytes) -> str:
    """A bucket key for a one-line report: as text when printable, Go-quoted otherwise."""
    text = key.decode("utf-8", "surrogateescape")
    return text if text and text.isprintable() and " " not in text else go_quote(text)


def namespace_problems(name: bytes) -> list[str]:
    """Why containerd cannot serve a namespace bucket of this name ([] when it can)."""
    try:
        validate_namespace(name.decode("utf-8", "surrogateescape"))
    except InvalidArgument as exc:
        return [exc.detail]
    return []


def _map_problems(record: Any, name: bytes, *, sized: bool, context: str) -> list[str]:
    """A labels/annotations bucket as containerd's readMap sees it."""
    if record.get(name) is not None:
        return [f"{name.decode()}: a value where containerd expects a bucket (it reads no {name.decode()})"]
    bucket = record.bucket(name)
    if bucket is None:
        return []
    problems = []
    for key, value in bucket.items():
        where = f"{name.decode()}/{show_key(key)}"
        if value is None:
            problems.append(f"{where}: a bucket where containerd expects a value (it reads \"\")")
            continue
        if sized:
            try:
                validate_label(key.decode("utf-8", "surrogateescape"), value.decode("utf-8", "surrogateescape"))
            except InvalidArgument as exc:
                problems.append(f"{where}: {context}: {exc.detail}")
    return problems


def label_bucket_problems(owner: Any, context: str) -> list[str]:
    """The ``labels`` bucket under ``owner`` (an image, blob or namespace bucket)."""
    return _map_problems(owner, layout.LABELS_BUCKET, sized=True, context=context)


def image_record_problems(record: Any, raw: "RawImage") -> list[str]:
    """Everything in one stored image record containerd would refuse or read
    differently from what it holds, each as "<sub-path>: <why>".

    ``record`` is the engine's bucket and ``raw`` the same record as the one
    reader (store/image_records.py) reads it. The bucket answers what the
    reader cannot see, the record's shape (a bucket where containerd reads a
    value, or the reverse); :func:`image_problems` judges the values.
    """
    problems, shaped = _image_shape_problems(record)
    return problems + image_problems(raw, shaped=shaped)


def _image_shape_problems(record: Any) -> tuple[list[str], set[bytes]]:
    """(what in the record's layout containerd reads differently, the fields
    those reports already cover)."""
    problems: list[str] = []
    shaped: set[bytes] = set()
    for key in (layout.CREATED_AT_KEY, layout.UPDATED_AT_KEY):
        if record.bucket(key) is not None:
            problems.append(f"{key.decode()}: a bucket where containerd expects a time")
            shaped.add(key)
    # label sizes are judged on the values, in image_problems
    problems += _map_problems(record, layout.LABELS_BUCKET, sized=False, context="")
    problems += _map_problems(record, layout.ANNOTATIONS_BUCKET, sized=False, context="")
    target = record.bucket(layout.TARGET_BUCKET)
    if target is None:
        if record.get(layout.TARGET_BUCKET) is not None:
            problems.append(f"target: a value: {_UNREADABLE_TARGET}")
            shaped.add(layout.TARGET_BUCKET)
        return problems, shaped
    problems += [f"target/{show_key(key)}: a bucket where containerd expects a value"
                 for key, value in target.items() if value is None]
    return problems, shaped


_UNREADABLE_TARGET = ("containerd cannot read the image (\"unable to read target bucket\") "
                      "and fails to list the namespace")


def image_problems(raw: "RawImage", *, shaped: Container[bytes] = ()) -> list[str]:
    """What in an image record, as the one reader reads it, containerd would
    refuse or mis-read: containerd's readImage (times must decode; a target
    must exist) and validateImage (labels, digest, size, media type). An
    image that breaks the latter lists fine, but every later Update of it,
    ``ctr images label`` included, is refused. ``shaped``: fields whose
    layout is already reported (:func:`image_record_problems`)."""
    problems = []
    for key, value in ((layout.CREATED_AT_KEY, raw.created), (layout.UPDATED_AT_KEY, raw.updated)):
        if key in shaped:
            continue
        problem = time_problem(value)
        if problem == "missing":
            problems.append(f"{key.decode()}: missing (containerd reads the zero time)")
        elif problem is not None:
            problems.append(f"{key.decode()}: {problem} (containerd fails to list the namespace)")
    for key, value in raw.labels or ():
        try:
            validate_label(key.decode("utf-8", "surrogateescape"), value.decode("utf-8", "surrogateescape"))
        except InvalidArgument as exc:
            problems.append(f"labels/{show_key(key)}: image.Labels: {exc.detail}")
    if not raw.has_target:
        if layout.TARGET_BUCKET not in shaped:
            problems.append(f"target: missing: {_UNREADABLE_TARGET}")
        return problems
    size = 0
    if raw.size is None:
        problems.append("target/size: missing (containerd reads 0)")
    else:
        size = codec.decode_varint_lenient(raw.size)
        try:
            codec.decode_varint_exact(raw.size)
        except codec.CodecError as exc:
            problems.append(f"target/size: {exc} (containerd reads {size})")
    digest = (raw.digest or b"").decode("utf-8", "surrogateescape")
    reason = digest_problem(digest)
    if raw.digest is None:
        problems.append("target/digest: missing")
    elif reason is not None:
        problems.append(f"target/digest: {go_quote(digest)} invalid: {reason}")
    if raw.size is not None and size <= 0:
        problems.append(f"target/size: {size}: must be greater than zero")
    if not raw.media_type:
        problems.append("target/mediatype: missing or empty")
    return problems


def blob_key_problems(key: bytes) -> list[str]:
    """A content blob record's key must be a digest containerd can parse."""
    reason = digest_problem(key.decode("utf-8", "surrogateescape"))
    return [] if reason is None else [f"key is not a digest: {reason}"]
