"""The metadata file: opening it, initialising it, and grouped writes.

Version choice for a file we create: ``v1/version = 3``.

* containerd 1.6 and 1.7 run at db version 3: they open it as is.
* containerd 2.x runs at 4 and migrates 3 -> 4 on start. That migration only
  moves root-level ``<ns>/sandboxes`` buckets under ``v1/<ns>/`` and drops
  other root-level buckets; it never touches ``v1/<ns>/images``, and a file
  we created has no root bucket but ``v1``. So 2.x opens it without touching
  images.
* Writing 4 would also be opened by 1.6/1.7 (they do not refuse newer
  versions) but would claim a migration we never performed, so 3 is the
  honest value.

An existing file keeps its version (and a ``v1`` bucket without a version
key is left alone: containerd would treat it as version 0 and run its
migrations, which are not ours to imitate).

Writes go through :meth:`MetadataDB.batch` when many requests arrive at once:
it is group commit in the spirit of bbolt's ``DB.Batch`` — concurrent callers'
functions run one after another inside a single write transaction, which
commits (and fsyncs) once. A function that raises makes the shared
transaction roll back; the batch is then retried without it and the failing
function is run alone, so every caller gets exactly the result it would
have got running alone. Functions must therefore be safe to run more than
once against a rolled-back transaction (pure functions of the tx are).

A server that can hold its answers back uses :meth:`MetadataDB.open_group`
instead: a :class:`WriteGroup` runs whole calls one after another on one
thread, in one write transaction, and another thread commits it; nobody is
answered before that commit. No caller waits in a thread of its own, which
is what makes many concurrent writers cheap in Python.

Commit notes: a function run in a write transaction may say, with
:meth:`MetadataDB.declare`, exactly what it changed (a payload the db does
not look into). After a successful commit, listeners registered with
:meth:`MetadataDB.add_commit_listener` get the new transaction id and every
payload, or None when some function that completed in the transaction did
not declare (its changes are unknown). A transaction rolled back, abandoned
or failing to commit reports nothing. This is what lets the image store
keep its snapshots of whole buckets across its own commits.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from typing import Any, Callable, Optional, Sequence, TypeVar

from .. import bolt
from ..errors import DatabaseUnavailable, FailedPrecondition, without_path
from . import codec, layout

log = logging.getLogger("boltimages.store")

T = TypeVar("T")

#: db version written into files we create (see module docstring)
NEW_FILE_DB_VERSION = 3


class _Notes:
    """What the functions run in the one open write transaction declared.

    Only one write transaction exists at a time: every write transaction is
    begun with the commit lock held (update, both paths of batch, open_group)
    and ends before it is released, so the db keeps one of these, replaced
    at each begin. ``unknown``: some function completed without declaring."""

    __slots__ = ("tx", "payloads", "unknown", "current")

    def __init__(self, tx: "bolt.Tx") -> None:
        self.tx = tx
        self.payloads: list[Any] = []
        self.unknown = False
        #: the running function's declarations, kept only if it completes
        self.current: Optional[list[Any]] = None

    def run(self, fn: Callable[["bolt.Tx"], T]) -> T:
        """``fn`` in the transaction, its declarations kept if it returns.
        (A function that raises either changed nothing, in a group, or makes
        the transaction roll back: either way it has nothing to report.)"""
        self.current = None
        result = fn(self.tx)
        mine, self.current = self.current, None
        if mine is None:
            self.unknown = True
        else:
            self.payloads.extend(mine)
        return result


#: a commit listener: (new transaction id, payloads or None for unknown changes)
CommitListener = Callable[[int, Optional[list[Any]]], None]


class _Call:
    """One queued function and its outcome.

    ``wake`` is set when the call is finished and also when its waiter should
    try to lead the next batch (the commit lock was released while it was at
    the head of the queue), so a waiter sleeps on one event for both.
    """

    __slots__ = ("fn", "wake", "finished", "result", "error", "solo")

    def __init__(self, fn: Callable[[Any], Any]) -> None:
        self.fn = fn
        self.wake = threading.Event()
        self.finished = False
        self.result: Any = None
        self.error: Optional[BaseException] = None
        self.solo = False

    def finish(self) -> None:
        self.finished = True
        self.wake.set()


class _Rollback(Exception):
    """Internal: one function of a batch failed; roll the shared tx back."""

    def __init__(self, index: int) -> None:
        super().__init__(index)
        self.index = index


class GroupPoisoned(BaseException):
    """A function run in a :class:`WriteGroup` failed after changing the
    shared transaction, so the whole group must be rolled back.

    A BaseException so that servicers' ``except Exception`` error mapping
    lets it through to whoever runs the group."""


class WriteGroup:
    """An open write transaction that several calls share, run on one thread.

    While the group is active on a thread (``with group:``), every
    :meth:`MetadataDB.batch` or :meth:`MetadataDB.update` from that thread
    runs its function in the group's transaction, and :meth:`defer` holds
    callbacks (event publishing) until the commit. A function that raises
    without having changed the transaction just raises: its caller gets its
    own error. One that raises after changing it poisons the group
    (:class:`GroupPoisoned`): the runner must :meth:`abandon` it and run the
    calls again, the failing one on its own.
    """

    def __init__(self, owner: "MetadataDB", tx: "bolt.Tx", notes: _Notes) -> None:
        self._owner = owner
        self.tx = tx
        self._notes = notes
        self._opened_at = tx.changes
        self.calls = 0
        self._after: list[Callable[[], None]] = []
        self._ended = False

    def __enter__(self) -> "WriteGroup":
        self._owner._local.group = self
        return self

    def __exit__(self, *exc: Any) -> None:
        self._owner._local.group = None

    def run(self, fn: Callable[["bolt.Tx"], T]) -> T:
        before = self.tx.changes
        try:
            result = self._notes.run(fn)
        except BaseException:
            if self.tx.changes != before:
                raise GroupPoisoned() from None
            raise
        self.calls += 1
        return result

    @property
    def changed(self) -> bool:
        """Whether anything was written (a commit would change the file)."""
        return self.tx.changes != self._opened_at

    def defer(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` after a successful commit (see :meth:`finish`)."""
        self._after.append(callback)

    def commit(self) -> None:
        """Commit (and fsync) the shared transaction; any thread may call it.
        The commit lock is released whatever happens."""
        try:
            self._owner._commit(self.tx)
            self._owner.batches_committed += 1
        finally:
            self._end()

    def abandon(self) -> None:
        """Roll the shared transaction back (nothing of it is kept)."""
        try:
            self._owner._drop_notes(self.tx)
            self.tx.rollback()
        finally:
            self._end()

    def finish(self) -> None:
        """After a successful commit: run the deferred callbacks, in order."""
        after, self._after = self._after, []
        for callback in after:
            callback()

    def _end(self) -> None:
        if not self._ended:
            self._ended = True
            self._owner._release_commit()


class MetadataDB:
    """containerd's ``meta.db`` opened through our engine."""

    def __init__(self, path: "str | os.PathLike[str]", *, read_only: bool = False,
                 create: bool = True, timeout: Optional[float] = 1.0, no_sync: bool = False,
                 max_batch_size: int = 1000) -> None:
        self.path = os.fspath(path)
        self.read_only = read_only
        self.max_batch_size = max(1, max_batch_size)
        if create and not read_only:
            parent = os.path.dirname(os.path.abspath(self.path))
            if not os.path.isdir(parent):
                raise DatabaseUnavailable(f"cannot open {self.path}: directory {parent} does not exist")
        try:
            # "keep": leave the freelist the way the file has it (persisted
            # by containerd 1.6, not persisted from 1.7), so containerd and
            # we agree on the file after every commit
            self._db = bolt.open(self.path, read_only=read_only, create=create and not read_only,
                                 timeout=timeout, freelist="keep", no_sync=no_sync)
        except bolt.DatabaseLocked:
            from ..lockholder import locked_text
            raise DatabaseUnavailable(locked_text(self.path)) from None
        except FileNotFoundError:
            raise DatabaseUnavailable(f"{self.path} does not exist") from None
        except (bolt.CorruptDatabase, bolt.InvalidDatabase, bolt.VersionMismatch) as exc:
            raise DatabaseUnavailable(f"{self.path}: not a usable bolt file: {without_path(str(exc), self.path)}; "
                                      "see 'boltimages check'") from None
        except PermissionError as exc:
            raise DatabaseUnavailable(f"cannot open {self.path}: {exc.strerror or exc}") from None
        except OSError as exc:
            raise DatabaseUnavailable(f"cannot open {self.path}: {exc.strerror or exc}") from None
        self._queue: list[_Call] = []
        self._queue_lock = threading.Lock()
        self._commit_lock = threading.Lock()
        self._local = threading.local()  # .group: the WriteGroup active on this thread
        self.batches_committed = 0  # observability for tests and metrics
        #: the open write transaction's notes (see _Notes; one writer at a time)
        self._notes: Optional[_Notes] = None
        #: commit listeners, weakly held when they are bound methods
        self._listeners: list[Callable[[], Optional[CommitListener]]] = []
        self._listeners_lock = threading.Lock()
        try:
            if not read_only:
                self._init_version()
        except BaseException:
            self._db.close()
            raise

    # -- lifecycle ------------------------------------------------------------
    def close(self) -> None:
        if not self._db.closed:
            self._db.close()

    @property
    def closed(self) -> bool:
        return self._db.closed

    def __enter__(self) -> "MetadataDB":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def engine(self) -> "bolt.DB":
        return self._db

    # -- schema version -------------------------------------------------------
    def _init_version(self) -> None:
        def init(tx: "bolt.Tx") -> None:
            if tx.bucket(layout.SCHEMA_BUCKET) is not None:
                return
            schema = tx.create_bucket(layout.SCHEMA_BUCKET)
            schema.put(layout.DB_VERSION_KEY, codec.encode_varint(NEW_FILE_DB_VERSION))

        # a read-only look first: an initialised file needs no write tx
        if self._db.view(lambda tx: tx.bucket(layout.SCHEMA_BUCKET) is not None):
            return
        self._db.update(init)

    def db_version(self) -> Optional[int]:
        """The file's ``v1/version``, or None when absent."""
        def read(tx: "bolt.Tx") -> Optional[int]:
            schema = tx.bucket(layout.SCHEMA_BUCKET)
            raw = schema.get(layout.DB_VERSION_KEY) if schema is not None else None
            return None if raw is None else codec.decode_varint_lenient(raw)
        return self._db.view(read)

    # -- transactions ---------------------------------------------------------
    def committed_txid(self) -> int:
        """The id of the last commit to the file: the id a read transaction
        begun now would have."""
        return self._db.txid

    def view(self, fn: Callable[["bolt.Tx"], T]) -> T:
        return self._db.view(fn)

    def _begin_write(self) -> "bolt.Tx":
        """A write transaction, with fresh notes; the caller holds the commit lock."""
        tx = self._db.begin(write=True)
        self._notes = _Notes(tx)
        return tx

    def _drop_notes(self, tx: "bolt.Tx") -> None:
        notes = self._notes
        if notes is not None and notes.tx is tx:
            self._notes = None

    def _write(self, fn: Callable[["bolt.Tx"], T], *, noted: bool = True) -> T:
        """``fn`` in a write transaction, committed (like bolt's DB.update), with a failed
        commit logged: callers answer their clients, but the operator must see it too.
        ``noted``: fn is one function whose declarations count (False: fn runs
        functions through the notes itself, as a batch does)."""
        tx = self._begin_write()
        try:
            result = self._notes.run(fn) if noted else fn(tx)  # type: ignore[union-attr]
        except BaseException:
            self._drop_notes(tx)
            tx.rollback()
            raise
        self._commit(tx)
        return result

    def _commit(self, tx: "bolt.Tx") -> None:
        notes = self._notes
        self._drop_notes(tx)
        # the id this commit gives the file: the one before it plus one
        txid = tx.id if self._listeners else 0
        try:
            tx.commit()
        except BaseException as exc:
            # ENOSPC, EIO, a read-only remount...: every caller in the batch gets an
            # error, and the file keeps its last committed state
            log.error("commit failed; nothing of this transaction was written",
                      extra={"db": self.path, "error": without_path(str(exc), self.path)})
            raise
        if txid and notes is not None and notes.tx is tx:
            self._report(txid, None if notes.unknown else notes.payloads)

    # -- commit notes -----------------------------------------------------------
    def declare(self, tx: "bolt.Tx", payload: Any) -> None:
        """From inside a function running in write transaction ``tx``: what
        the function changed in it is exactly what ``payload`` says (call it
        last, once the writes are done; several calls add up). A function
        that completes without declaring makes the whole commit's changes
        unknown to the listeners. Outside a transaction of ours: ignored."""
        notes = self._notes
        if notes is None or notes.tx is not tx:
            return
        if notes.current is None:
            notes.current = [payload]
        else:
            notes.current.append(payload)

    def _declaring(self, fn: Callable[["bolt.Tx"], T], payload: Any) -> Callable[["bolt.Tx"], T]:
        def declared(tx: "bolt.Tx") -> T:
            result = fn(tx)
            self.declare(tx, payload)
            return result
        return declared

    def add_commit_listener(self, listener: CommitListener) -> None:
        """Call ``listener(txid, payloads)`` after every successful commit
        made through this db, in commit order, with the commit lock held (no
        other commit can happen meanwhile): ``payloads`` are the declarations
        in the order made, or None when the changes are not all declared.
        A bound method is held weakly (a store that is gone stops listening)."""
        ref: Callable[[], Optional[CommitListener]]
        if hasattr(listener, "__self__"):
            ref = weakref.WeakMethod(listener)  # type: ignore[arg-type]
        else:
            ref = lambda: listener  # noqa: E731
        with self._listeners_lock:
            self._listeners = [*self._listeners, ref]

    def _report(self, txid: int, payloads: Optional[list[Any]]) -> None:
        dead = False
        for ref in self._listeners:
            listener = ref()
            if listener is None:
                dead = True
                continue
            try:
                listener(txid, payloads)
            except Exception as exc:  # noqa: BLE001 - the commit is made; a listener's cache just goes stale
                log.error("a commit listener failed: %s", exc, extra={"db": self.path})
        if dead:
            with self._listeners_lock:
                self._listeners = [ref for ref in self._listeners if ref() is not None]

    def walk_path(self, path: Sequence[bytes], max_depth: int) -> Optional[bytes]:
        """The walk copy of the bucket at ``path`` as of the last commit, in
        one engine call (None: no such bucket); see bolt.DB.walk_path."""
        return self._db.walk_path(path, max_depth)

    def update(self, fn: Callable[["bolt.Tx"], T]) -> T:
        if self.read_only:
            raise FailedPrecondition(f"{self.path} is open read-only")
        group = getattr(self._local, "group", None)
        if group is not None:  # this thread already holds the write transaction
            return group.run(fn)
        # Taken so that open_group (on the server's loop thread) sees this
        # writer and steps aside instead of blocking the loop on the engine.
        self._commit_lock.acquire()
        try:
            return self._write(fn)
        finally:
            self._release_commit()

    def open_group(self) -> Optional[WriteGroup]:
        """A :class:`WriteGroup` holding the write transaction, or None when
        another writer commits or waits (then use :meth:`batch` as usual)."""
        if self.read_only or self._queue or not self._commit_lock.acquire(blocking=False):
            return None
        try:
            tx = self._begin_write()
        except BaseException:
            self._release_commit()
            raise
        return WriteGroup(self, tx, self._notes)  # type: ignore[arg-type]

    def active_group(self) -> Optional[WriteGroup]:
        """The group active on the calling thread, if any."""
        return getattr(self._local, "group", None)

    def batch(self, fn: Callable[["bolt.Tx"], T], *, declares: Any = None) -> T:
        """Run ``fn`` in a write transaction shared with concurrent callers.

        Returns fn's result or raises its exception, exactly like
        :meth:`update` would. ``declares``: a payload that describes all
        fn changes, declared for it when it returns (see :meth:`declare`).
        """
        if self.read_only:
            raise FailedPrecondition(f"{self.path} is open read-only")
        if declares is not None:
            fn = self._declaring(fn, declares)
        group = getattr(self._local, "group", None)
        if group is not None:
            return group.run(fn)
        # A lone writer (nobody committing, nobody queued) runs at once in its
        # own transaction, in its own thread: grouping only pays when callers
        # overlap, and the queue's bookkeeping would only add latency.
        if not self._queue and self._commit_lock.acquire(blocking=False):
            try:
                if not self._queue:
                    result = self._write(fn)
                    self.batches_committed += 1
                    return result
            finally:
                self._release_commit()
        call = _Call(fn)
        with self._queue_lock:
            self._queue.append(call)
        while not call.finished:
            # Lead a batch when the commit lock is free; otherwise sleep until
            # our call is finished or the holder, releasing the lock, wakes us
            # as the head of the queue. A caller whose call was committed
            # returns at once, not after the next batch's commit.
            if self._commit_lock.acquire(blocking=False):
                try:
                    with self._queue_lock:
                        calls = self._queue[:self.max_batch_size]
                        del self._queue[:len(calls)]
                    if calls:
                        self._run_batch(calls)
                finally:
                    self._release_commit()
            else:
                call.wake.wait()
                call.wake.clear()
        if call.solo:
            return self.update(fn)
        if call.error is not None:
            raise call.error
        return call.result  # type: ignore[no-any-return]

    def _release_commit(self) -> None:
        """Release the commit lock and wake the head of the queue to lead
        next. Every release with callers queued wakes one, so none is left
        sleeping while the lock is free."""
        self._commit_lock.release()
        if self._queue:
            with self._queue_lock:
                if self._queue:
                    self._queue[0].wake.set()

    def _run_batch(self, calls: list[_Call]) -> None:
        pending = list(calls)
        while pending:
            results: list[Any] = []

            def run_all(tx: "bolt.Tx") -> None:
                notes: _Notes = self._notes  # type: ignore[assignment] - set by _begin_write
                for index, call in enumerate(pending):
                    try:
                        results.append(notes.run(call.fn))
                    except BaseException:
                        raise _Rollback(index) from None

            try:
                self._write(run_all, noted=False)
            except _Rollback as failed:
                # retry the others without it; the failing call reruns alone
                # in its own thread so it sees its error (or its success if
                # the failure was caused by a neighbour)
                bad = pending.pop(failed.index)
                bad.solo = True
                bad.finish()
                continue
            except BaseException as exc:  # commit itself failed: all share it
                for call in pending:
                    call.error = exc
                    call.finish()
                return
            self.batches_committed += 1
            for call, result in zip(pending, results):
                call.result = result
                call.finish()
            return
