"""MetadataDB.batch: concurrent writers share transactions, results unchanged."""

from __future__ import annotations

import threading

import pytest

from boltimages.errors import AlreadyExists, InvalidArgument
from boltimages.store.db import MetadataDB
from boltimages.store.images import Descriptor, Image, ImageStore
from tests.helpers import wait_until

D = "sha256:" + "33" * 32


def image(name: str, size: int = 1) -> Image:
    return Image(name=name, target=Descriptor(media_type="m", digest=D, size=size))


def run_threads(n: int, work) -> list:
    results: list = [None] * n
    barrier = threading.Barrier(n)

    def worker(i: int) -> None:
        barrier.wait()
        try:
            results[i] = ("ok", work(i))
        except Exception as exc:  # noqa: BLE001 - recorded for the assertions
            results[i] = ("err", exc)
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def test_batch_groups_and_isolates_failures(meta_db: MetadataDB) -> None:
    store = ImageStore(meta_db)
    store.create("default", image("exists"))
    n = 64

    def work(i: int):
        if i % 8 == 0:
            return store.create("default", image("exists"))       # AlreadyExists
        if i % 8 == 1:
            return store.create("default", image(f"bad{i}", size=0))  # InvalidArgument
        return store.create("default", image(f"img{i}")).name

    before = meta_db.batches_committed
    results = run_threads(n, work)
    for i, (kind, value) in enumerate(results):
        if i % 8 == 0:
            assert kind == "err" and isinstance(value, AlreadyExists)
        elif i % 8 == 1:
            assert kind == "err" and isinstance(value, InvalidArgument)
        else:
            assert (kind, value) == ("ok", f"img{i}")
    names = {i.name for i in store.list("default")}
    assert names == {"exists"} | {f"img{i}" for i in range(n) if i % 8 > 1}
    # fewer commits than successful writers means grouping happened
    assert meta_db.batches_committed - before <= n


def test_batch_returns_values_and_serialises(meta_db: MetadataDB) -> None:
    def bump(tx):
        b = tx.bucket(b"v1").create_bucket_if_not_exists(b"counter-test")
        value = int(b.get(b"n") or b"0") + 1
        b.put(b"n", str(value).encode())
        return value

    results = run_threads(32, lambda i: meta_db.batch(bump))
    values = sorted(v for kind, v in results if kind == "ok")
    assert values == list(range(1, 33))  # every increment seen exactly once
    assert meta_db.view(lambda tx: tx.bucket(b"v1").bucket(b"counter-test").get(b"n")) == b"32"


def test_failing_function_runs_alone(meta_db: MetadataDB) -> None:
    calls = {"n": 0}

    def flaky(tx):
        calls["n"] += 1
        raise ValueError("boom")

    # a lone writer runs once, in its own transaction
    with pytest.raises(ValueError, match="boom"):
        meta_db.batch(flaky)
    assert calls["n"] == 1
    # queued behind another writer it runs in the shared batch, then alone
    calls["n"] = 0
    started, release = threading.Event(), threading.Event()

    def slow(tx):
        started.set()
        release.wait(10)

    first = threading.Thread(target=meta_db.batch, args=(slow,))
    first.start()
    assert started.wait(10)
    errors: list[BaseException] = []

    def queued() -> None:
        try:
            meta_db.batch(flaky)
        except ValueError as exc:
            errors.append(exc)

    second = threading.Thread(target=queued)
    second.start()
    assert wait_until(lambda: bool(meta_db._queue), 10, 0.001)
    release.set()
    first.join(10)
    second.join(10)
    assert [str(e) for e in errors] == ["boom"]
    assert calls["n"] == 2  # once in the batch, once alone


def test_waiting_writers_share_one_commit(meta_db: MetadataDB) -> None:
    """Deterministic grouping: while one batch is inside its transaction, every
    writer that arrives queues up; the next leader commits them all at once."""
    n = 20
    started = threading.Event()

    def slow_first(tx):
        started.set()
        wait_until(lambda: len(meta_db._queue) >= n, 50, 0.001)
        tx.bucket(b"v1").put(b"first", b"1")
        return "first"

    def writer(i: int):
        return meta_db.batch(lambda tx: tx.bucket(b"v1").put(f"k{i}".encode(), b"v") or i)

    before = meta_db.batches_committed
    first = threading.Thread(target=lambda: meta_db.batch(slow_first))
    first.start()
    assert started.wait(10)
    results = run_threads(n, writer)
    first.join(30)
    assert [r for r in results] == [("ok", i) for i in range(n)]
    assert meta_db.batches_committed - before == 2
    assert meta_db.view(lambda tx: sorted(k for k, _ in tx.bucket(b"v1").items() if k.startswith(b"k"))) \
        == sorted(f"k{i}".encode() for i in range(n))
