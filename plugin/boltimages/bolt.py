"""Python API of the bbolt-compatible storage engine.

A thin layer over the C core in ``native/`` (see ``native/bolt.h``): it turns
status codes into exception classes and C buffers into ``bytes``, and adds
nothing to the engine's semantics. Example, reading a containerd database
without disturbing a running daemon's view of it::

    from boltimages import bolt

    with bolt.open("/var/lib/containerd/io.containerd.metadata.v1.bolt/meta.db",
                   read_only=True) as db:
        with db.begin() as tx:
            for name in tx.buckets():
                print(name)

Every call into C releases the GIL (cffi does so in API mode), so other Python
threads keep running while the engine searches pages or waits for fsync. The
two that build Python objects as the engine reads (the batch scan behind
``items()`` and :meth:`Bucket.walk_native`) hold it while they read: about
7 ms of CPU for the 10,000 records of an image List.
"""

from __future__ import annotations

import os
import threading
from array import array  # typecode "I" is the C unsigned int: 32 bits on every platform we build for
from bisect import bisect_left
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence, TypeVar, Union

from . import _unpack
from ._bolt import ffi, lib

BytesLike = Union[bytes, bytearray, memoryview]
T = TypeVar("T")

# Iteration asks C for a few items first (most buckets in containerd's layout
# hold a handful of keys) and for larger batches after that.
_SCAN_FIRST = 16
_SCAN_CHUNK = 1024

__all__ = [
    "open", "DB", "Tx", "Bucket", "Cursor", "compact", "check_file", "os_page_size",
    "BoltError", "DatabaseLocked", "CorruptDatabase", "InvalidDatabase", "VersionMismatch",
    "BucketNotFound", "BucketExists", "BucketNameRequired", "KeyRequired", "KeyTooLarge",
    "ValueTooLarge", "IncompatibleValue", "TxClosed", "TxNotWritable", "DatabaseReadOnly",
    "DatabaseClosed", "TxBusy", "TxFailed", "SequenceOverflow",
]


# ---------------------------------------------------------------- errors ----

class BoltError(Exception):
    """Base class of every engine error; ``status`` is the C status code."""

    status: int = -1

    def __init__(self, message: str, status: Optional[int] = None) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status


class DatabaseLocked(BoltError):
    """Another process holds the file's lock (containerd running, or another writer)."""


class CorruptDatabase(BoltError):
    """Structural damage; the message names the page and what is wrong."""


class InvalidDatabase(BoltError):
    """The file is not a bolt database (no valid meta page)."""


class VersionMismatch(BoltError):
    """The file uses a bolt format version other than 2."""


class BucketNotFound(BoltError, KeyError):
    pass


class BucketExists(BoltError):
    pass


class BucketNameRequired(BoltError, ValueError):
    pass


class KeyRequired(BoltError, ValueError):
    pass


class KeyTooLarge(BoltError, ValueError):
    pass


class ValueTooLarge(BoltError, ValueError):
    pass


class IncompatibleValue(BoltError):
    """A value where a bucket was expected, or a bucket where a value was."""


class TxClosed(BoltError):
    pass


class TxNotWritable(BoltError):
    pass


class DatabaseReadOnly(BoltError):
    pass


class DatabaseClosed(BoltError):
    pass


class TxBusy(BoltError):
    """This thread already holds the write transaction; a second one would deadlock."""


class TxFailed(BoltError):
    """An earlier error in this write transaction means it can only be rolled back."""


class SequenceOverflow(BoltError):
    pass


class IOFailure(BoltError, OSError):
    pass


_ERRORS: dict[int, type[BoltError]] = {
    lib.BOLT_ERR_IO: IOFailure,
    lib.BOLT_ERR_LOCKED: DatabaseLocked,
    lib.BOLT_ERR_CORRUPT: CorruptDatabase,
    lib.BOLT_ERR_INVALID: InvalidDatabase,
    lib.BOLT_ERR_VERSION: VersionMismatch,
    lib.BOLT_ERR_NOMEM: BoltError,
    lib.BOLT_ERR_TX_CLOSED: TxClosed,
    lib.BOLT_ERR_TX_NOT_WRITABLE: TxNotWritable,
    lib.BOLT_ERR_DB_READ_ONLY: DatabaseReadOnly,
    lib.BOLT_ERR_BUCKET_NOT_FOUND: BucketNotFound,
    lib.BOLT_ERR_BUCKET_EXISTS: BucketExists,
    lib.BOLT_ERR_BUCKET_NAME_REQUIRED: BucketNameRequired,
    lib.BOLT_ERR_KEY_REQUIRED: KeyRequired,
    lib.BOLT_ERR_KEY_TOO_LARGE: KeyTooLarge,
    lib.BOLT_ERR_VALUE_TOO_LARGE: ValueTooLarge,
    lib.BOLT_ERR_INCOMPATIBLE: IncompatibleValue,
    lib.BOLT_ERR_DB_CLOSED: DatabaseClosed,
    lib.BOLT_ERR_TX_BUSY: TxBusy,
    lib.BOLT_ERR_TX_FAILED: TxFailed,
    lib.BOLT_ERR_INVALID_ARG: BoltError,
    lib.BOLT_ERR_SEQUENCE_OVERFLOW: SequenceOverflow,
}


def _error(status: int, context: str = "") -> BoltError:
    message = ffi.string(lib.bolt_errmsg()).decode("utf-8", "replace")
    if not message:
        message = ffi.string(lib.bolt_status_name(status)).decode()
    if context:
        message = f"{context}: {message}"
    return _ERRORS.get(status, BoltError)(message, status)


def _shown(name: Any) -> str:
    """A bucket name for an error message, quoted as Go quotes it (users never
    see Python's b'...' form; bbolt's own messages carry no name at all)."""
    from .errors import go_quote
    return go_quote(bytes(name).decode("utf-8", "surrogateescape"))


def _check(status: int, context: str = "") -> None:
    if status:
        raise _error(status, context)


def _bytes(name: str, data: Any) -> Any:
    """Something C can read as `const uint8_t *` without a copy."""
    if type(data) is bytes:
        return data
    if isinstance(data, (bytearray, memoryview)):
        return ffi.from_buffer(data)
    raise TypeError(f"{name} must be bytes-like, not {type(data).__name__}")


# Each thread gets its own output structs: a Bucket object may be shared
# between threads, and the C side only serialises the call itself.
class _Scratch(threading.local):
    def __init__(self) -> None:
        self.kv = ffi.new("bolt_kv *")
        self.u64 = ffi.new("uint64_t *")
        self.size = ffi.new("size_t *")
        self.walk_out = ffi.new("uint8_t **")
        self.tx_out = ffi.new("bolt_tx **")
        self.bucket_out = ffi.new("bolt_bucket **")


_scratch = _Scratch()

# Bucket.items has _unpack build its bytes objects straight from the leaf
# pages through the engine's bolt_cursor_next_each (see native/pyext/unpack.c).
_unpack.bind_engine(int(ffi.cast("uintptr_t", ffi.addressof(lib, "bolt_cursor_next_each"))),
                    lib.bolt_cursor_size())
# Bucket.walk_native hands the address of the engine's visiting walk to an
# extension that cuts records as it goes (native/pyext/records.c).
_WALK_EACH = int(ffi.cast("uintptr_t", ffi.addressof(lib, "bolt_bucket_walk_each")))

def _kv_pair(kv: Any) -> Optional[tuple[bytes, Optional[bytes]]]:
    if kv.key == ffi.NULL:
        return None
    key = ffi.buffer(kv.key, kv.key_len)[:]
    if kv.flags & 1:
        return key, None
    return key, ffi.buffer(kv.value, kv.value_len)[:]


def _prefix_end(prefix: bytes) -> Optional[bytes]:
    """The smallest key above every key that starts with `prefix` (None: no bound)."""
    trimmed = prefix.rstrip(b"\xff")
    if not trimmed:
        return None
    return trimmed[:-1] + bytes([trimmed[-1] + 1])


def os_page_size() -> int:
    return int(lib.bolt_os_page_size())


# -------------------------------------------------------------- database ----

_FREELIST_MODES = {"keep": lib.BOLT_FREELIST_KEEP, "persist": lib.BOLT_FREELIST_PERSIST,
                   "no-sync": lib.BOLT_FREELIST_NO_SYNC}


class DB:
    """An open bolt file. Use :func:`open` to make one."""

    def __init__(self, path: Union[str, os.PathLike], *, read_only: bool = False,
                 create: bool = True, timeout: Optional[float] = 1.0, page_size: int = 0,
                 freelist: str = "keep", no_sync: bool = False, mode: int = 0o600) -> None:
        if freelist not in _FREELIST_MODES:
            raise ValueError(f"freelist must be one of {sorted(_FREELIST_MODES)}, not {freelist!r}")
        self.path = os.fspath(path)
        opts = ffi.new("bolt_options *")
        lib.bolt_options_init(opts)
        opts.read_only = int(read_only)
        opts.create = int(create)
        opts.page_size = page_size
        opts.timeout = -1.0 if timeout is None else float(timeout)
        opts.freelist_mode = _FREELIST_MODES[freelist]
        opts.no_sync = int(no_sync)
        opts.file_mode = mode
        out = ffi.new("bolt_db **")
        status = lib.bolt_open(os.fsencode(self.path), opts, out)
        if status:
            raise _error(status, self.path)
        self._db = ffi.gc(out[0], lib.bolt_db_free)
        self.read_only = read_only

    # -- lifecycle
    def close(self) -> None:
        """Close the file. Open transactions end (rolled back); using them raises TxClosed."""
        if self._db is not None:
            status = lib.bolt_close(self._db)
            self._db = None
            _check(status, self.path)

    @property
    def closed(self) -> bool:
        return self._db is None

    def __enter__(self) -> "DB":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _handle(self) -> Any:
        if self._db is None:
            raise DatabaseClosed(f"{self.path}: database is closed", lib.BOLT_ERR_DB_CLOSED)
        return self._db

    # -- facts
    def info(self) -> dict[str, Any]:
        out = ffi.new("bolt_info *")
        _check(lib.bolt_db_info(self._handle(), out), self.path)
        return {name: getattr(out, name) for name in (
            "page_size", "txid", "pgid", "root_pgid", "freelist_pgid", "meta_slot", "file_size",
            "free_count", "pending_count", "freelist_persisted", "read_only", "open_read_txs",
            "last_commit_runs")}

    def release_pages(self) -> None:
        """Let go of the mapping's resident pages (see bolt_db_release_pages):
        keeps RSS bounded while a whole file is read once."""
        _check(lib.bolt_db_release_pages(self._handle()), self.path)

    @property
    def txid(self) -> int:
        """The id of the last committed write transaction: the one a read
        transaction begun now would see (cheaper than :meth:`info`)."""
        return int(lib.bolt_db_txid(self._handle()))

    @property
    def page_size(self) -> int:
        return int(self.info()["page_size"])

    def sync(self) -> None:
        _check(lib.bolt_db_sync(self._handle()), self.path)

    # -- transactions
    def begin(self, write: bool = False) -> "Tx":
        """Start a transaction. A write transaction waits for the current writer to finish."""
        out = _scratch.tx_out
        status = lib.bolt_begin(self._handle(), int(write), out)
        if status:
            raise _error(status, self.path)
        return Tx(self, ffi.gc(out[0], lib.bolt_tx_free), bool(write))

    def view(self, fn: Callable[["Tx"], T]) -> T:
        with self.begin(write=False) as tx:
            return fn(tx)

    def update(self, fn: Callable[["Tx"], T]) -> T:
        with self.begin(write=True) as tx:
            return fn(tx)

    def check(self, max_problems: int = 0) -> list[str]:
        with self.begin() as tx:
            return tx.check(max_problems)

    def walk_path(self, path: Sequence[bytes], max_depth: int = 64) -> Optional[bytes]:
        """:meth:`Bucket.walk_bytes` of the bucket at `path` (nested bucket
        names from the top level), read in a transaction of its own; None
        when a bucket on the path is missing or a key there holds a value.

        One engine call (and no Tx or Bucket objects) where the same read
        through a transaction makes a begin, a lookup per level, a walk and a
        rollback: the store's Get of one image by name fell from 23 to 11 us.
        """
        out = _scratch.walk_out
        lens = array("I", map(len, path))
        status = lib.bolt_db_walk_path(self._handle(), len(lens), b"".join(path),
                                       ffi.from_buffer("uint32_t[]", lens) if lens else ffi.NULL,
                                       max_depth, out, _scratch.size)
        if status == lib.BOLT_ERR_BUCKET_NOT_FOUND or status == lib.BOLT_ERR_INCOMPATIBLE:
            return None
        _check(status, self.path)
        data = out[0]
        try:
            return ffi.buffer(data, _scratch.size[0])[:] if data != ffi.NULL else b""
        finally:
            lib.bolt_free(data)

    def compact_to(self, dst_path: Union[str, os.PathLike], tx_max_bytes: int = 64 << 20,
                   trim: bool = True, **dst_options: Any) -> None:
        """Copy every bucket and key into a new file, like ``bbolt compact``.

        The engine grows files ahead of need (as bbolt does), so a fresh copy
        would keep the source's size on disk; with `trim` the copy is cut back
        to its last page, which every bbolt reader accepts.
        """
        dst_options.setdefault("page_size", self.page_size)
        with DB(dst_path, **dst_options) as dst:
            _check(lib.bolt_compact(dst._handle(), self._handle(), tx_max_bytes),
                   f"compact {self.path} -> {os.fspath(dst_path)}")
            info = dst.info()
        if trim:
            used = info["pgid"] * info["page_size"]
            if os.path.getsize(dst_path) > used:
                os.truncate(dst_path, used)

    def __repr__(self) -> str:
        state = "closed" if self._db is None else ("read-only" if self.read_only else "read-write")
        return f"<bolt.DB {self.path!r} {state}>"


def open(path: Union[str, os.PathLike], **options: Any) -> DB:  # noqa: A001 - mirrors bolt.Open
    """Open (or create) a bolt file. See :class:`DB` for the options."""
    return DB(path, **options)


def compact(src_path: Union[str, os.PathLike], dst_path: Union[str, os.PathLike],
            tx_max_bytes: int = 64 << 20, timeout: Optional[float] = 1.0, **dst_options: Any) -> None:
    with DB(src_path, read_only=True, timeout=timeout) as src:
        src.compact_to(dst_path, tx_max_bytes, **dst_options)


def check_file(path: Union[str, os.PathLike], max_problems: int = 0,
               timeout: Optional[float] = 1.0) -> list[str]:
    """Structural problems in a bolt file (empty list: sound), opened read-only."""
    with DB(path, read_only=True, timeout=timeout) as db:
        return db.check(max_problems)


# ----------------------------------------------------------- transaction ----

class Tx:
    """A transaction. As a context manager, a write transaction commits when the
    block ends normally and rolls back on an exception; a read one just ends."""

    __slots__ = ("db", "_tx", "writable", "_id", "_root")

    def __init__(self, db: DB, handle: Any, writable: bool) -> None:
        self.db = db
        self._tx = handle
        self.writable = writable
        # Fetched on first use: a short transaction (one Get) should pay for
        # the calls it makes, not for ones it never needs.
        self._id: Optional[int] = None
        self._root: Optional[Bucket] = None

    @property
    def id(self) -> int:
        if self._id is None:
            self._id = int(lib.bolt_tx_id(self._tx))
        return self._id

    @property
    def root(self) -> "Bucket":
        if self._root is None:
            out = _scratch.bucket_out
            _check(lib.bolt_tx_root(self._tx, out))
            self._root = Bucket(self, out[0])
        return self._root

    @property
    def closed(self) -> bool:
        return bool(lib.bolt_tx_closed(self._tx))

    @property
    def size(self) -> int:
        return int(lib.bolt_tx_size(self._tx))

    @property
    def changes(self) -> int:
        """A count that grows with every change this transaction makes, and
        is 2**64-1 once it has failed or closed: equal before and after an
        operation means the operation left the transaction as it was."""
        return int(lib.bolt_tx_changes(self._tx))

    def commit(self) -> None:
        _check(lib.bolt_tx_commit(self._tx), "commit")

    def rollback(self) -> None:
        _check(lib.bolt_tx_rollback(self._tx), "rollback")

    def __enter__(self) -> "Tx":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        # Ending a transaction that is already closed (committed inside the
        # block, or by DB.close) is not an error here.
        if exc_type is None and self.writable:
            status = lib.bolt_tx_commit(self._tx)
        else:
            status = lib.bolt_tx_rollback(self._tx)
        if status and status != lib.BOLT_ERR_TX_CLOSED:
            raise _error(status, "commit" if exc_type is None and self.writable else "rollback")

    # Top-level buckets are nested buckets of the root bucket.
    def bucket(self, name: BytesLike) -> Optional["Bucket"]:
        return self.root.bucket(name)

    def create_bucket(self, name: BytesLike) -> "Bucket":
        return self.root.create_bucket(name)

    def create_bucket_if_not_exists(self, name: BytesLike) -> "Bucket":
        return self.root.create_bucket_if_not_exists(name)

    def delete_bucket(self, name: BytesLike) -> None:
        self.root.delete_bucket(name)

    def buckets(self) -> list[bytes]:
        return [key for key, value in self.root.items() if value is None]

    def for_each(self, fn: Callable[[bytes, "Bucket"], Any]) -> None:
        for name in self.buckets():
            fn(name, self.root._child(name))

    def check(self, max_problems: int = 0) -> list[str]:
        report = ffi.new("char **")
        count = ffi.new("size_t *")
        _check(lib.bolt_check(self._tx, max_problems, report, count), "check")
        try:
            text = ffi.string(report[0]).decode("utf-8", "replace") if report[0] else ""
        finally:
            lib.bolt_free(report[0])
        return [line for line in text.split("\n") if line]

    def __repr__(self) -> str:
        kind = "write" if self.writable else "read"
        return f"<bolt.Tx {kind} id={self.id}{' closed' if self.closed else ''}>"


# ---------------------------------------------------------------- bucket ----

class Bucket:
    """A bucket inside a transaction: keys in byte order, each holding a value
    or a nested bucket. Valid only while its transaction is open."""

    __slots__ = ("tx", "_b", "__weakref__")

    def __init__(self, tx: Tx, handle: Any) -> None:
        self.tx = tx
        self._b = handle

    @property
    def writable(self) -> bool:
        return bool(lib.bolt_bucket_writable(self._b))

    # -- nested buckets
    def _child(self, name: BytesLike) -> "Bucket":
        out = _scratch.bucket_out
        _check(lib.bolt_bucket_bucket(self._b, _bytes("name", name), len(name), out))
        return Bucket(self.tx, out[0])

    def bucket(self, name: BytesLike) -> Optional["Bucket"]:
        """The nested bucket `name`, or None when there is none (or it holds a value)."""
        out = _scratch.bucket_out
        status = lib.bolt_bucket_bucket(self._b, _bytes("name", name), len(name), out)
        if status == lib.BOLT_ERR_BUCKET_NOT_FOUND or status == lib.BOLT_ERR_INCOMPATIBLE:
            return None
        _check(status)
        return Bucket(self.tx, out[0])

    def _create(self, name: BytesLike, if_not_exists: int) -> "Bucket":
        out = _scratch.bucket_out
        status = lib.bolt_bucket_create(self._b, _bytes("name", name), len(name), if_not_exists, out)
        if status:  # the quoted name is built only for the error: 16 µs per Update when eager
            raise _error(status, f"bucket {_shown(name)}")
        return Bucket(self.tx, out[0])

    def create_bucket(self, name: BytesLike) -> "Bucket":
        return self._create(name, 0)

    def create_bucket_if_not_exists(self, name: BytesLike) -> "Bucket":
        return self._create(name, 1)

    def delete_bucket(self, name: BytesLike) -> None:
        status = lib.bolt_bucket_delete_bucket(self._b, _bytes("name", name), len(name))
        if status:
            raise _error(status, f"bucket {_shown(name)}")

    # -- values
    def get(self, key: BytesLike) -> Optional[bytes]:
        """The value of `key`; None when missing or when `key` names a nested bucket."""
        kv = _scratch.kv
        status = lib.bolt_bucket_get(self._b, _bytes("key", key), len(key), kv)
        if status:
            raise _error(status)
        if kv.value == ffi.NULL:
            return None
        return ffi.buffer(kv.value, kv.value_len)[:]

    def put(self, key: BytesLike, value: BytesLike) -> None:
        status = lib.bolt_bucket_put(self._b, _bytes("key", key), len(key), _bytes("value", value), len(value))
        if status:
            raise _error(status)

    def delete(self, key: BytesLike) -> None:
        status = lib.bolt_bucket_delete(self._b, _bytes("key", key), len(key))
        if status:
            raise _error(status)

    def __contains__(self, key: BytesLike) -> bool:
        kv = _scratch.kv
        _check(lib.bolt_bucket_get(self._b, _bytes("key", key), len(key), kv))
        return kv.value != ffi.NULL or bool(kv.flags & 1)

    # -- batches
    def put_many(self, pairs: Iterable[tuple[BytesLike, BytesLike]]) -> int:
        """Put every (key, value) in one C call; returns how many were stored."""
        pairs = pairs if isinstance(pairs, list) else list(pairs)
        if not pairs:
            return 0
        keys = [bytes(k) for k, _ in pairs]
        values = [bytes(v) for _, v in pairs]
        data = b"".join(b for kv in zip(keys, values) for b in kv)
        key_lens = ffi.new("uint32_t[]", [len(k) for k in keys])
        value_lens = ffi.new("uint32_t[]", [len(v) for v in values])
        done = ffi.new("size_t *")
        status = lib.bolt_bucket_put_batch(self._b, len(pairs), data, key_lens, value_lens, done)
        if status:
            raise _error(status, f"put_many item {done[0]}")
        return len(pairs)

    # -- sequence
    def sequence(self) -> int:
        _check(lib.bolt_bucket_sequence(self._b, _scratch.u64))
        return int(_scratch.u64[0])

    def set_sequence(self, value: int) -> None:
        _check(lib.bolt_bucket_set_sequence(self._b, value))

    def next_sequence(self) -> int:
        _check(lib.bolt_bucket_next_sequence(self._b, _scratch.u64))
        return int(_scratch.u64[0])

    # -- iteration
    def cursor(self) -> "Cursor":
        return Cursor(self)

    def items(self, start: Optional[BytesLike] = None, stop: Optional[BytesLike] = None,
              prefix: Optional[BytesLike] = None) -> Iterator[tuple[bytes, Optional[bytes]]]:
        """(key, value) pairs in key order, value None for nested buckets.

        `start` is inclusive, `stop` exclusive; `prefix` keeps keys that start with it.
        """
        for keys, values in self._chunks(start, stop, prefix):
            yield from zip(keys, values)

    def _chunks(self, start: Optional[BytesLike] = None, stop: Optional[BytesLike] = None,
                prefix: Optional[BytesLike] = None) -> Iterator[tuple[list[bytes], list[Optional[bytes]]]]:
        """The items of :meth:`items` as (keys, values) lists of up to a
        thousand each, made in C from the leaf pages (one crossing per list)."""
        if prefix is not None:
            prefix = bytes(prefix)
            if start is None or bytes(start) < prefix:
                start = prefix
            bound = _prefix_end(prefix)
            if bound is not None and (stop is None or bound < bytes(stop)):
                stop = bound
        if stop is not None:
            stop = bytes(stop)
        cursor = Cursor(self)
        kv = _scratch.kv
        if start is None:
            _check(lib.bolt_cursor_first(cursor._c, kv))
        else:
            _check(lib.bolt_cursor_seek(cursor._c, _bytes("start", start), len(start), kv))
        if kv.key == ffi.NULL:
            return
        scan = _unpack.scan
        mem = ffi.buffer(cursor._mem)
        include_current = 1
        batch = _SCAN_FIRST
        while True:
            status, keys, values, end = scan(mem, include_current, batch)
            if status:
                raise _error(status)
            if stop is not None and keys and keys[-1] >= stop:
                cut = bisect_left(keys, stop)
                if cut:
                    yield keys[:cut], values[:cut]
                return
            if keys:
                yield keys, values
            if end:
                return
            # A full batch: the cursor rests on its last item.
            include_current = 0
            batch = _SCAN_CHUNK

    def walk_bytes(self, max_depth: int = 64) -> bytes:
        """This bucket's whole subtree, depth first, copied in one C call as
        one bytes object: records of four native-endian u32 (depth, flags
        with 1 for a nested bucket, key length, value length) then the key
        and value bytes, a nested bucket followed by its own entries down to
        ``max_depth`` levels. Reading a bucket of many small records costs
        one crossing instead of one per record (the image store reads its
        records this way, store/image_records.py)."""
        out = _scratch.walk_out
        _check(lib.bolt_bucket_walk(self._b, max_depth, out, _scratch.size))
        data = out[0]
        try:
            return ffi.buffer(data, _scratch.size[0])[:] if data != ffi.NULL else b""
        finally:
            lib.bolt_free(data)

    def walk_native(self, visit: Callable[[int, int], tuple[int, T]]) -> T:
        """The walk of :meth:`walk_bytes` for a C extension that visits the
        entries itself instead of reading a copy (pyext/records.c's
        cut_bucket, for List): ``visit(walk_each, bucket)`` gets the
        addresses of ``bolt_bucket_walk_each`` and of this bucket's handle,
        calls the first on the second, and returns (the engine's status, its
        result). The status becomes this module's exception; the result is
        returned. The handle is valid while the transaction is open, which
        it is for the whole call."""
        status, result = visit(_WALK_EACH, int(ffi.cast("uintptr_t", self._b)))
        _check(status)
        return result

    def __iter__(self) -> Iterator[tuple[bytes, Optional[bytes]]]:
        return self.items()

    def keys(self) -> Iterator[bytes]:
        return (key for key, _ in self.items())

    def for_each(self, fn: Callable[[bytes, Optional[bytes]], Any]) -> None:
        for key, value in self.items():
            fn(key, value)

    def stats(self) -> dict[str, int]:
        out = ffi.new("bolt_bucket_stats *")
        _check(lib.bolt_bucket_stats_get(self._b, out))
        return {name: int(getattr(out, name)) for name, _ in ffi.typeof("bolt_bucket_stats").fields}

    def __repr__(self) -> str:
        return f"<bolt.Bucket of {self.tx!r}>"


# ---------------------------------------------------------------- cursor ----

class Cursor:
    """Moves over a bucket's keys in byte order. Each move returns (key, value)
    — value None for a nested bucket — or None past either end."""

    __slots__ = ("bucket", "_mem", "_c")

    def __init__(self, bucket: Bucket) -> None:
        self.bucket = bucket
        # Python owns the memory, so dropping a cursor never needs a C call.
        self._mem = ffi.new("uint64_t[]", (lib.bolt_cursor_size() + 7) // 8)
        self._c = ffi.cast("bolt_cursor *", self._mem)
        _check(lib.bolt_cursor_init(self._c, bucket._b))

    def _move(self, status: int) -> Optional[tuple[bytes, Optional[bytes]]]:
        if status:
            raise _error(status)
        return _kv_pair(_scratch.kv)

    def first(self) -> Optional[tuple[bytes, Optional[bytes]]]:
        return self._move(lib.bolt_cursor_first(self._c, _scratch.kv))

    def last(self) -> Optional[tuple[bytes, Optional[bytes]]]:
        return self._move(lib.bolt_cursor_last(self._c, _scratch.kv))

    def next(self) -> Optional[tuple[bytes, Optional[bytes]]]:
        return self._move(lib.bolt_cursor_next(self._c, _scratch.kv))

    def prev(self) -> Optional[tuple[bytes, Optional[bytes]]]:
        return self._move(lib.bolt_cursor_prev(self._c, _scratch.kv))

    def seek(self, key: BytesLike) -> Optional[tuple[bytes, Optional[bytes]]]:
        return self._move(lib.bolt_cursor_seek(self._c, _bytes("key", key), len(key), _scratch.kv))

    def delete(self) -> None:
        _check(lib.bolt_cursor_delete(self._c))
