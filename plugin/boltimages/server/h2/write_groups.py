"""Grouped writes: many clients' unary writes run on the loop thread in one
write transaction, committed by one helper thread, answered together.

Why: group commit through the worker pool (store.db.MetadataDB.batch) shares
the fsync, but it parks one pool thread per waiting caller, and in Python
those threads pay for it: every wake-up and every engine call that drops
the GIL becomes a thread hand-off. With 16 clients writing, the server spent
about 650 µs of CPU per Create that way, five times the write's own work.
Here a write costs what it costs alone, plus one hand-off per group.

The sequence, all on the loop thread except the commit:

1. A grouped method's call that is not alone (see ``Call._alone``) waits in
   ``waiting``; a group starts one loop iteration later, so calls that
   arrived together (one read of many sockets) share it.
2. ``open_group()`` (the store's) takes the write transaction, or says no
   while another writer commits; then the calls go to the pool as before.
3. Each call's handler runs with the group active on this thread: its
   store writes join the group's transaction and its events wait for the
   commit. Its answer is kept, not sent.
4. The commit (with its fsync) runs on the committer thread; the loop goes
   on serving reads and reading requests, which wait in ``waiting``.
5. Back on the loop: events are published, then every answer is sent.

A handler that failed after changing the shared transaction escapes as a
BaseException (store.db.GroupPoisoned): the group is rolled back, the
failing call runs again alone in the pool (so it gets exactly its own
answer), and the others run again in a fresh group. Nobody was answered
yet, so nobody can tell. A failed commit sends every call of the group to
the pool, where each one gets its own answer.
"""

from __future__ import annotations

import logging
from concurrent import futures
from typing import Any, Callable, Iterable, Optional

log = logging.getLogger("boltimages.server.h2")


class WriteGroups:
    """Loop-thread state of grouped writes for one server."""

    def __init__(self, open_group: Callable[[], Any], methods: Iterable[str]) -> None:
        #: returns a store group (run/commit/abandon/finish/changed, a context
        #: manager that activates it on this thread) or None when busy
        self.open_group = open_group
        self.methods = frozenset(methods)
        self.waiting: list[Any] = []
        #: a group is running or committing: new writes wait for it
        self.busy = False
        self._scheduled = False
        self._committer = futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="group-commit")

    def pending(self) -> bool:
        return self.busy or bool(self.waiting)

    def add(self, call: Any) -> None:
        """Loop thread: queue a call; its group starts on a later iteration."""
        self.waiting.append(call)
        self._schedule(call.conn.loop)

    def _schedule(self, loop: Any) -> None:
        if not self._scheduled and not self.busy:
            self._scheduled = True
            loop.call_soon(self._run, loop)

    def _run(self, loop: Any) -> None:
        self._scheduled = False
        if self.busy:
            return
        calls = [call for call in self.waiting if not call.finished]
        self.waiting = []
        if not calls:
            return
        try:
            group = self.open_group()
        except Exception as exc:  # noqa: BLE001 - the pool path reports it per call
            log.warning("cannot start a write group: %s", exc)
            group = None
        if group is None:
            for call in calls:
                call.to_pool()
            return
        self.busy = True
        done: list[tuple[Any, tuple[Optional[bytes], Any, str]]] = []
        poisoned: Optional[int] = None
        with group:
            for index, call in enumerate(calls):
                if call.finished:  # cancelled or expired while it waited
                    continue
                try:
                    outcome = call.run_grouped()
                except BaseException:  # noqa: BLE001 - the group's transaction is spoilt
                    poisoned = index
                    break
                done.append((call, outcome))
        if poisoned is not None:
            self._abandon(group)
            calls[poisoned].to_pool()
            self.waiting[:0] = [call for call, _ in done] + calls[poisoned + 1:]
            self._schedule(loop)
            return
        if not group.changed:
            # nothing to commit (every call failed on its own before writing)
            self._abandon(group)
            self._answer(done)
            self._schedule_if_waiting(loop)
            return
        try:
            self._committer.submit(self._commit, loop, group, done)
        except RuntimeError:  # shutting down: nothing of this group is kept
            self._abandon(group)
            for call, _ in done:
                call.to_pool()

    def _commit(self, loop: Any, group: Any, done: list[Any]) -> None:
        """Committer thread: the commit and its fsync, without the loop."""
        error: Optional[BaseException] = None
        try:
            group.commit()
        except BaseException as exc:  # noqa: BLE001 - reported on the loop
            error = exc
        try:
            loop.call_soon_threadsafe(self._done, loop, group, done, error)
        except RuntimeError:
            pass  # the loop is closed: the server stopped and its clients are gone

    def _done(self, loop: Any, group: Any, done: list[Any], error: Optional[BaseException]) -> None:
        self.busy = False
        if error is None:
            try:
                group.finish()
            except Exception as exc:  # noqa: BLE001 - an event lost must not lose the answers
                log.warning("after a group commit: %s", exc)
            self._answer(done)
        else:
            log.warning("a group commit failed (%s); its %d calls run again one by one", error, len(done))
            for call, _ in done:
                call.to_pool()
        self._schedule_if_waiting(loop)

    def _schedule_if_waiting(self, loop: Any) -> None:
        if self.waiting:
            self._schedule(loop)

    @staticmethod
    def _answer(done: list[Any]) -> None:
        # Outside a connection's own callback nothing flushes for us: write
        # each connection's answers once, after all of them are queued.
        conns = {}
        for call, outcome in done:
            try:
                call.respond_grouped(outcome)
            except Exception as exc:  # noqa: BLE001 - one broken call must not block the rest
                log.error("answering a grouped call failed: %s", exc)
            conns[id(call.conn)] = call.conn
        for conn in conns.values():
            conn.flush()

    def _abandon(self, group: Any) -> None:
        self.busy = False
        try:
            group.abandon()
        except Exception as exc:  # noqa: BLE001 - the transaction is gone either way
            log.warning("rolling back a write group: %s", exc)

    def close(self) -> None:
        """After the loop stopped: let a commit in flight finish."""
        self._committer.shutdown(wait=True)
