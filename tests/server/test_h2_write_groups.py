"""Grouped writes (server/h2/write_groups.py) over a real store file.

The runner is driven on a real asyncio loop with stand-in calls whose
handlers write through MetadataDB.batch, exactly as the images servicer
does. What must hold: nobody is answered before the commit that holds their
write; a handler that fails after writing rolls its group back, runs again
alone, and the others run again in a fresh group; a handler that fails
without writing just gets its error; events wait for the commit and are
never published twice.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Callable, Optional

import grpc
import pytest

from boltimages.server.h2.write_groups import WriteGroups
from boltimages.store.db import MetadataDB

BUCKET = b"grouped"


class _Conn:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.flushes = 0

    def flush(self) -> None:
        self.flushes += 1


class _Call:
    """Stands in for grpc_call.Call: a handler, and where its answer went."""

    def __init__(self, conn: _Conn, db: MetadataDB, key: bytes, handler: Callable[[Any], Any],
                 log: list[str], events: list[tuple[str, bytes]]) -> None:
        self.conn = conn
        self.db = db
        self.key = key
        self.handler = handler
        self.log = log
        self.events = events
        self.finished = False
        self.runs = 0
        self.answer: Optional[tuple[Any, Any, str]] = None
        self.committed_when_answered: Optional[bool] = None
        self.pooled = False

    def run_grouped(self) -> tuple[Optional[bytes], grpc.StatusCode, str]:
        self.runs += 1
        try:
            self.db.batch(lambda tx: self.handler(tx.create_bucket_if_not_exists(BUCKET)))
        except Exception as exc:  # noqa: BLE001 - the servicer's error mapping, in short
            return None, grpc.StatusCode.UNKNOWN, str(exc)
        group = self.db.active_group()
        assert group is not None
        key = self.key
        group.defer(lambda: self.events.append(("created", key)))
        return b"ok", grpc.StatusCode.OK, ""

    def respond_grouped(self, outcome: tuple[Any, Any, str]) -> None:
        self.answer = outcome
        self.finished = True
        self.committed_when_answered = self.db.view(
            lambda tx: tx.bucket(BUCKET) is not None and tx.bucket(BUCKET).get(self.key) is not None)
        self.log.append(self.key.decode())

    def to_pool(self) -> None:
        # what the pool would do: the call alone, in its own transaction
        self.pooled = True
        self.runs += 1
        try:
            self.db.batch(lambda tx: self.handler(tx.create_bucket_if_not_exists(BUCKET)))
            self.answer = (b"ok", grpc.StatusCode.OK, "")
        except Exception as exc:  # noqa: BLE001
            self.answer = (None, grpc.StatusCode.UNKNOWN, str(exc))
        self.finished = True


def _put(key: bytes) -> Callable[[Any], None]:
    return lambda b: b.put(key, b"v")


def _put_then_fail(key: bytes) -> Callable[[Any], None]:
    def handler(b: Any) -> None:
        b.put(key, b"half")
        raise ValueError("failed after writing")
    return handler


def _fail_clean(_: Any) -> None:
    raise ValueError("refused before writing")


@pytest.fixture
def db(tmp_path):
    store = MetadataDB(tmp_path / "meta.db")
    yield store
    store.close()


def _drive(db: MetadataDB, make_calls: Callable[[_Conn], list[_Call]],
           open_group: Optional[Callable[[], Any]] = None) -> tuple[list[_Call], WriteGroups]:
    """Queue the calls in one loop iteration and run until all are answered."""
    loop = asyncio.new_event_loop()
    groups = WriteGroups(open_group or db.open_group, ["/m"])
    conn = _Conn(loop)
    calls = make_calls(conn)

    async def main() -> None:
        for call in calls:
            groups.add(call)
        for _ in range(2000):
            if all(c.finished for c in calls) and not groups.pending():
                return
            await asyncio.sleep(0.005)
        raise AssertionError("grouped calls were not all answered")

    try:
        loop.run_until_complete(main())
    finally:
        groups.close()
        loop.close()
    return calls, groups


def _stored(db: MetadataDB) -> dict[bytes, bytes]:
    def read(tx: Any) -> dict[bytes, bytes]:
        b = tx.bucket(BUCKET)
        return {} if b is None else dict(b.items())
    return db.view(read)


def test_calls_that_arrive_together_share_one_commit_and_are_answered_after_it(db) -> None:
    log: list[str] = []
    events: list[tuple[str, bytes]] = []
    before = db.batches_committed
    calls, _ = _drive(db, lambda conn: [_Call(conn, db, f"k{i}".encode(), _put(f"k{i}".encode()), log, events)
                                        for i in range(8)])
    assert db.batches_committed - before == 1
    assert all(c.answer == (b"ok", grpc.StatusCode.OK, "") for c in calls)
    assert all(c.committed_when_answered for c in calls), "an answer went out before its commit"
    assert not any(c.pooled for c in calls)
    assert [e[1] for e in events] == [f"k{i}".encode() for i in range(8)]
    assert _stored(db) == {f"k{i}".encode(): b"v" for i in range(8)}


def test_a_handler_failing_after_writing_rolls_back_and_runs_alone(db) -> None:
    log: list[str] = []
    events: list[tuple[str, bytes]] = []

    def make(conn: _Conn) -> list[_Call]:
        return [_Call(conn, db, b"a", _put(b"a"), log, events),
                _Call(conn, db, b"b", _put_then_fail(b"b"), log, events),
                _Call(conn, db, b"c", _put(b"c"), log, events)]
    calls, _ = _drive(db, make)
    a, b, c = calls
    assert b.pooled and b.answer == (None, grpc.StatusCode.UNKNOWN, "failed after writing")
    assert not a.pooled and not c.pooled
    assert a.runs == 2 and c.runs == 1, "the call before the failure must run again in a fresh group"
    assert a.answer[1] == c.answer[1] == grpc.StatusCode.OK
    assert a.committed_when_answered and c.committed_when_answered
    # the half-written value of the failed call is nowhere; the event of a's
    # rolled-back first run was never published
    assert _stored(db) == {b"a": b"v", b"c": b"v"}
    assert sorted(events) == [("created", b"a"), ("created", b"c")]


def test_a_handler_failing_before_writing_just_gets_its_error(db) -> None:
    log: list[str] = []
    events: list[tuple[str, bytes]] = []
    before = db.batches_committed

    def make(conn: _Conn) -> list[_Call]:
        return [_Call(conn, db, b"a", _put(b"a"), log, events),
                _Call(conn, db, b"b", _fail_clean, log, events),
                _Call(conn, db, b"c", _put(b"c"), log, events)]
    calls, _ = _drive(db, make)
    a, b, c = calls
    assert not any(x.pooled for x in calls) and [x.runs for x in calls] == [1, 1, 1]
    assert b.answer == (None, grpc.StatusCode.UNKNOWN, "refused before writing")
    assert db.batches_committed - before == 1
    assert _stored(db) == {b"a": b"v", b"c": b"v"}


def test_a_group_that_wrote_nothing_commits_nothing(db) -> None:
    log: list[str] = []
    db.update(lambda tx: tx.create_bucket(BUCKET))
    before = db.batches_committed
    txid = db.view(lambda tx: tx.id)
    calls, _ = _drive(db, lambda conn: [_Call(conn, db, b"x", _fail_clean, log, []) for _ in range(3)])
    assert all(c.answer[1] == grpc.StatusCode.UNKNOWN for c in calls)
    assert db.batches_committed == before and db.view(lambda tx: tx.id) == txid


def test_a_failed_commit_sends_every_call_to_the_pool(db) -> None:
    log: list[str] = []

    class _FailingCommit:
        def __init__(self, group: Any) -> None:
            self.group = group

        def __getattr__(self, name: str) -> Any:
            return getattr(self.group, name)

        def __enter__(self) -> Any:
            return self.group.__enter__()

        def __exit__(self, *exc: Any) -> None:
            self.group.__exit__(*exc)

        def commit(self) -> None:
            self.group.abandon()
            raise OSError("disk full (simulated)")

    state = {"first": True}

    def open_group() -> Any:
        group = db.open_group()
        if group is not None and state["first"]:
            state["first"] = False
            return _FailingCommit(group)
        return group

    calls, _ = _drive(db, lambda conn: [_Call(conn, db, f"k{i}".encode(), _put(f"k{i}".encode()), log, [])
                                        for i in range(4)], open_group)
    assert all(c.pooled and c.answer[1] == grpc.StatusCode.OK for c in calls)
    assert _stored(db) == {f"k{i}".encode(): b"v" for i in range(4)}


def test_calls_wait_for_a_writer_already_committing(db) -> None:
    """While another writer holds the commit, open_group says no and the calls
    take the pool path (where they queue behind that writer)."""
    log: list[str] = []
    entered, release = threading.Event(), threading.Event()

    def slow(tx: Any) -> None:
        entered.set()
        release.wait(10)
        tx.create_bucket_if_not_exists(BUCKET).put(b"slow", b"v")

    writer = threading.Thread(target=db.batch, args=(slow,))
    writer.start()
    entered.wait(10)
    try:
        assert db.open_group() is None
    finally:
        release.set()
        writer.join()
    calls, _ = _drive(db, lambda conn: [_Call(conn, db, b"k", _put(b"k"), log, [])])
    assert calls[0].answer[1] == grpc.StatusCode.OK and not calls[0].pooled
    assert _stored(db) == {b"slow": b"v", b"k": b"v"}


def test_cancelled_calls_are_skipped(db) -> None:
    log: list[str] = []

    def make(conn: _Conn) -> list[_Call]:
        calls = [_Call(conn, db, f"k{i}".encode(), _put(f"k{i}".encode()), log, []) for i in range(3)]
        calls[1].finished = True  # the client went away while it waited
        return calls
    calls, _ = _drive(db, make)
    assert calls[1].runs == 0 and calls[1].answer is None
    assert _stored(db) == {b"k0": b"v", b"k2": b"v"}
