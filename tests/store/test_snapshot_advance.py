"""Kept image snapshots follow our own commits (store/db.py commit notes,
image_records.Snapshots.advance).

A snapshot is a cache of a whole ``images`` bucket: a wrong one silently
serves stale data. So every check here compares what the store would
answer from what it kept with a fresh read of the file, byte for byte."""

from __future__ import annotations

import pathlib
import random
import threading
from typing import Any, Optional

import pytest

from boltimages.api.containerd.services.images.v1 import images_pb2
from boltimages.server.images_service import ImagesServicer, list_answer, list_response
from boltimages.store import image_records, layout
from boltimages.store.db import GroupPoisoned, MetadataDB
from boltimages.store.image_records import ImageChange, RawImage
from boltimages.store.images import Descriptor, Image, ImageStore
from boltimages.errors import AlreadyExists, NotFound
from tests.helpers import slow_budget

D1, D2 = "sha256:" + "ab" * 32, "sha256:" + "cd" * 32
MT = "application/vnd.oci.image.manifest.v1+json"


def image(name: str, labels: Optional[dict[str, str]] = None, digest: str = D1, size: int = 10,
          annotations: Optional[dict[str, str]] = None) -> Image:
    return Image(name=name, labels=labels, target=Descriptor(media_type=MT, digest=digest, size=size,
                                                            annotations=annotations))


def fields(raw: RawImage) -> tuple:
    return (raw.name, raw.created, raw.updated, raw.labels, raw.annotations, raw.has_target, raw.digest,
            raw.media_type, raw.size)


def fresh(db: MetadataDB, ns: str) -> tuple[list[RawImage], int]:
    """The namespace's records read from the file now, and their walk size."""
    data = db.walk_path(layout.images_path(ns), 2)
    return ([], 0) if data is None else (image_records.parse(data, 0), len(data))


def assert_current(store: ImageStore, ns: str) -> bool:
    """When the store has a snapshot of ``ns`` for the file as it is, it must
    be the file's records exactly; returns whether there was one."""
    snapshot = store.snapshot_now(ns)
    if snapshot is None:
        return False
    records, size = fresh(store.db, ns)
    assert [fields(r) for r in snapshot.records] == [fields(r) for r in records]
    assert list_response(snapshot.records) == list_response(records)
    assert snapshot.size == size  # every record here is one we wrote: the estimate is exact
    if snapshot.answer is not None:
        assert snapshot.answer == list_response(records)
    return True


# -- the db's commit notes -----------------------------------------------------------------


class Heard:
    def __init__(self, db: MetadataDB) -> None:
        self.reports: list[tuple[int, Optional[list[Any]]]] = []
        db.add_commit_listener(self.listen)

    def listen(self, txid: int, payloads: Optional[list[Any]]) -> None:
        self.reports.append((txid, None if payloads is None else list(payloads)))


def declaring(db: MetadataDB, *payloads: Any, fail: bool = False):
    def fn(tx: Any) -> str:
        tx.create_bucket_if_not_exists(b"scratch").put(repr(payloads).encode(), b"x")
        for payload in payloads:
            db.declare(tx, payload)
        if fail:
            raise RuntimeError("refused")
        return "done"
    return fn


def test_declared_commits_report_their_payloads_and_others_report_unknown(meta_db: MetadataDB) -> None:
    heard = Heard(meta_db)
    assert meta_db.update(declaring(meta_db, "a", "b")) == "done"
    assert heard.reports == [(meta_db.committed_txid(), ["a", "b"])]
    assert meta_db.batch(declaring(meta_db, "c")) == "done"
    assert heard.reports[-1] == (meta_db.committed_txid(), ["c"])
    meta_db.update(lambda tx: tx.create_bucket_if_not_exists(b"scratch").put(b"k", b"v"))
    assert heard.reports[-1] == (meta_db.committed_txid(), None)
    # a transaction rolled back reports nothing
    before = list(heard.reports)
    with pytest.raises(RuntimeError):
        meta_db.update(declaring(meta_db, "lost", fail=True))
    assert heard.reports == before
    # a declaration in a transaction that is not the one open is not ours to count
    with meta_db.engine.begin() as reader:
        meta_db.declare(reader, "stray")
    meta_db.update(declaring(meta_db, "d"))
    assert heard.reports[-1] == (meta_db.committed_txid(), ["d"])


def test_a_group_counts_each_call_and_an_abandoned_group_reports_nothing(meta_db: MetadataDB) -> None:
    heard = Heard(meta_db)
    group = meta_db.open_group()
    assert group is not None
    with group:
        meta_db.batch(declaring(meta_db, "one"))
        def refused(tx: Any) -> None:
            meta_db.declare(tx, "never")
            raise NotFound("refused before writing")
        with pytest.raises(NotFound):  # fails before writing: the group goes on without it
            meta_db.batch(refused)
        meta_db.update(declaring(meta_db, "two"))
    group.commit()
    assert heard.reports == [(meta_db.committed_txid(), ["one", "two"])]
    # a call that does not declare makes the whole group's changes unknown
    group = meta_db.open_group()
    with group:
        meta_db.batch(declaring(meta_db, "three"))
        meta_db.batch(lambda tx: tx.bucket(b"scratch").put(b"silent", b"1"))
    group.commit()
    assert heard.reports[-1] == (meta_db.committed_txid(), None)
    # poisoned, then abandoned: nothing
    group = meta_db.open_group()
    with group:
        meta_db.batch(declaring(meta_db, "four"))
        with pytest.raises(GroupPoisoned):
            meta_db.batch(declaring(meta_db, "five", fail=True))
    group.abandon()
    assert len(heard.reports) == 2
    meta_db.update(declaring(meta_db, "six"))
    assert heard.reports[-1] == (meta_db.committed_txid(), ["six"])


def test_batch_retry_reports_only_what_was_committed(meta_db: MetadataDB) -> None:
    """Concurrent batch callers, one failing: the shared transaction rolls
    back and is retried without it; every successful call's payload is
    reported exactly once, with the commit that holds it."""
    heard = Heard(meta_db)
    calls = 24
    barrier = threading.Barrier(calls)
    errors: list[BaseException] = []

    def work(i: int) -> None:
        barrier.wait()
        try:
            meta_db.batch(declaring(meta_db, f"p{i}", fail=i % 7 == 3))
        except RuntimeError as exc:
            errors.append(exc)
    threads = [threading.Thread(target=work, args=(i,)) for i in range(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    failing = {f"p{i}" for i in range(calls) if i % 7 == 3}
    assert len(errors) == len(failing)
    reported = [p for _, payloads in heard.reports for p in payloads]  # type: ignore[union-attr]
    assert sorted(reported) == sorted({f"p{i}" for i in range(calls)} - failing)
    txids = [txid for txid, _ in heard.reports]
    assert txids == sorted(set(txids)) and txids[-1] == meta_db.committed_txid()


def test_a_failed_commit_reports_nothing_and_the_snapshot_stays_true(tmp_path: pathlib.Path) -> None:
    from tests.tools.test_failures import small_tmpfs
    with small_tmpfs(tmp_path / "small", "256k") as small:
        db = MetadataDB(small / "meta.db")
        try:
            store = ImageStore(db)
            heard = Heard(db)
            store.create("ns", image("seed"))
            store.list_records("ns")
            failed = 0
            for i in range(400):
                reports = len(heard.reports)
                try:
                    store.create("ns", image(f"img-{i}", {"pad": "x" * 3000}))
                except Exception:  # noqa: BLE001 - the filesystem is full: that is the point
                    failed += 1
                    assert len(heard.reports) == reports
                    assert assert_current(store, "ns")  # the file kept its state; so did the snapshot
                    if failed == 3:
                        break
                    continue
                assert heard.reports[-1][0] == db.committed_txid()
                assert assert_current(store, "ns")
            assert failed == 3
        finally:
            db.close()


# -- snapshots through the store ---------------------------------------------------------------


def test_written_records_are_the_stored_records(meta_db: MetadataDB) -> None:
    store = ImageStore(meta_db)

    def stored(name: str) -> RawImage:
        key = name.encode()
        return image_records.parse(meta_db.walk_path(layout.images_path("ns") + (key,), 1), -1, key)[0]
    written = store.create_record("ns", image("a", {"k": "v", "empty": ""}, annotations={"x": ""}))
    assert fields(written) == fields(stored("a"))
    for mask, given in ((["labels"], image("a", {"only": ""})), (["labels.k"], image("a", {"k": "2"})),
                        (["target"], image("a", digest=D2, size=99)), ([], image("a", annotations={"n": "1"})),
                        (["annotations.n", "labels"], image("a", {"z": "1"}))):
        written = store.update_record("ns", given, mask)
        assert fields(written) == fields(stored("a")), mask


def test_writes_advance_the_kept_snapshot_without_reading(meta_db: MetadataDB, monkeypatch) -> None:
    store = ImageStore(meta_db)
    other = ImageStore(meta_db)  # the Transfer service's store writes to the same file
    for n in "cab":
        store.create("ns", image(n))
    listed = store.list_records("ns")
    quiet = store.snapshot_now("quiet")
    assert quiet is None
    store.create("quiet", image("q"))  # a new namespace: its snapshot starts empty
    assert assert_current(store, "quiet")
    snapshot = store.snapshot_now("ns")
    assert snapshot is not None and snapshot.records is listed  # untouched: the same records
    real_parse = image_records.parse

    def parse(walk: bytes, top: int, name: Optional[bytes] = None) -> list[RawImage]:
        assert top != 0, "the whole bucket was read again"  # one record (an Update's) is fine
        return real_parse(walk, top, name)
    monkeypatch.setattr(image_records, "parse", parse)
    store.create("ns", image("bb"))
    other.update("ns", image("a", {"new": "1"}), ["labels"])
    store.update("ns", image("c", digest=D2), ["target"])
    other.delete("ns", "b")
    assert [r.name for r in store.list_records("ns")] == [b"a", b"bb", b"c"]
    assert [r.name for r in listed] == [b"a", b"b", b"c"]  # the list readers had is left as it was
    monkeypatch.undo()
    assert assert_current(store, "ns") and assert_current(store, "quiet")
    assert assert_current(other, "quiet")  # the other store heard the same commits
    # a write whose changes nobody declared leaves every namespace to be read again
    meta_db.update(lambda tx: tx.bucket(b"v1").bucket(b"ns").create_bucket_if_not_exists(b"leases"))
    assert store.snapshot_now("ns") is None and store.snapshot_now("quiet") is None


def test_a_list_after_writes_splices_the_kept_answer(meta_db: MetadataDB, monkeypatch) -> None:
    servicer = ImagesServicer(meta_db, lambda *event: None)
    for n in ("c", "a", "e"):
        servicer.store.create("ns", image(n, {"n": n}))
    first = servicer.List(images_pb2.ListImagesRequest(), _Context("ns"))
    assert first == list_response(fresh(meta_db, "ns")[0])
    from boltimages.server import images_service

    def no_framing(records: list) -> None:
        raise AssertionError("the whole List was framed again")
    monkeypatch.setattr(images_service, "frame_list", no_framing)
    # a write, a Get that applies it, more writes: the answer is spliced, never framed whole
    servicer.store.update("ns", image("a", {"n": "changed"}), ["labels"])
    servicer.store.get_record("ns", "a")
    servicer.store.create("ns", image("b"))
    servicer.store.delete("ns", "e")
    answers = [servicer.List(images_pb2.ListImagesRequest(), _Context("ns")) for _ in range(2)]
    monkeypatch.undo()
    # (the second List found the answer the first spliced)
    assert answers == [list_response(fresh(meta_db, "ns")[0])] * 2
    snapshot = servicer.store.snapshot_now("ns")
    assert snapshot is not None and snapshot.answer == answers[0] and snapshot._base_answer is None
    assert list(snapshot.answer_sizes) == [len(list_response([r])) for r in snapshot.records]
    # more changes than are worth splicing: framed again
    for i in range(20):
        servicer.store.create("ns", image(f"many/{i:02d}"))
    assert servicer.List(images_pb2.ListImagesRequest(), _Context("ns")) == list_response(fresh(meta_db, "ns")[0])


def test_a_kept_answer_that_does_not_add_up_is_framed_afresh(meta_db: MetadataDB, caplog) -> None:
    servicer = ImagesServicer(meta_db, lambda *event: None)
    for n in "abc":
        servicer.store.create("ns", image(n))
    servicer.List(images_pb2.ListImagesRequest(), _Context("ns"))
    snapshot = servicer.store.snapshot_now("ns")
    assert snapshot is not None and snapshot.answer_sizes is not None
    snapshot.answer_sizes[0] = 1 << 40  # (a bug's doing: sizes that run past the answer)
    servicer.store.create("ns", image("bb"))
    assert servicer.List(images_pb2.ListImagesRequest(), _Context("ns")) == list_response(fresh(meta_db, "ns")[0])
    assert "splicing the kept List answer of namespace ns failed" in caplog.text


def test_snapshot_budget_holds_as_records_are_added() -> None:
    snaps = image_records.Snapshots(budget=1000)
    def raw(name: str) -> RawImage:
        return image_records.from_image(image(name))
    size = image_records.walk_size(raw("0000"))
    snaps.keep("ns", 1, [], 0)
    n = 0
    while snaps.current("ns", n + 1) is not None:
        snaps.advance(n + 2, [ImageChange("ns", b"%04d" % n, raw("%04d" % n), False)])
        n += 1
    assert n == 1000 // size + 1  # the record that went over the budget dropped the snapshot
    # a new bucket starts again from empty
    snaps.advance(n + 2, [ImageChange("ns", b"new", raw("new"), True)])
    assert [r.name for r in snaps.current("ns", n + 2).records] == [b"new"]


def test_walk_size_is_the_walk_copy_size(meta_db: MetadataDB) -> None:
    store = ImageStore(meta_db)
    store.create("ns", image("a", {"k": "v", "e": ""}, annotations={"x": "1"}))
    store.create("ns", image("b", {"e": ""}))
    store.create("ns", image("c"))
    records, size = fresh(meta_db, "ns")
    assert sum(image_records.walk_size(r) for r in records) == size


# -- the randomized differential test ---------------------------------------------------------

NAMESPACES = ["ns-a", "ns-b", "ns-c"]
NAMES = [f"docker.io/library/img{i}:{t}" for i in range(6) for t in ("1", "latest")]
KEYS = ["a", "b", "x.y", "containerd.io/gc.ref"]
VALUES = ["1", "2", "", "v" * 20]
MASKS = [["labels"], ["labels.a"], ["labels.a", "labels.b"], ["target"], ["annotations"], ["annotations.a"],
         [], ["labels", "target"], ["labels.x.y", "annotations"]]


def random_image(rng: random.Random, name: Optional[str] = None) -> Image:
    def pairs() -> Optional[dict[str, str]]:
        if rng.random() < 0.3:
            return None
        return {rng.choice(KEYS): rng.choice(VALUES) for _ in range(rng.randint(0, 3))}
    return image(name or rng.choice(NAMES), pairs(), rng.choice([D1, D2]), rng.choice([1, 10, 2**40]), pairs())


class _Context:
    """The one thing ImagesServicer.List asks of its gRPC context: the namespace header."""

    def __init__(self, ns: str) -> None:
        self.ns = ns

    def invocation_metadata(self) -> tuple:
        return (("containerd-namespace", self.ns),)


class Session:
    def __init__(self, db: MetadataDB, rng: random.Random) -> None:
        self.db = db
        self.rng = rng
        self.store = ImageStore(db)
        self.other = ImageStore(db)  # a second writer (as the Transfer service's store)
        self.servicer = ImagesServicer(db, lambda *event: None)
        self.servicer.store = self.store  # the server's List: answers kept, then spliced after writes
        self.kept = 0  # checks that found a snapshot: the test must not pass on none
        self.bulks = 0
        self.last_ns = NAMESPACES[0]  # written last

    def write(self, store: Optional[ImageStore] = None) -> None:
        """One random write; its returned record must be the one stored."""
        store = store or self.rng.choice([self.store, self.store, self.other])
        rng, ns = self.rng, self.rng.choice(NAMESPACES)
        self.last_ns = ns
        kind = rng.choice(["create", "create", "update", "update", "delete"])
        try:
            if kind == "create":
                written: Optional[RawImage] = store.create_record(ns, random_image(rng))
            elif kind == "update":
                written = store.update_record(ns, random_image(rng), rng.choice(MASKS))
            else:
                store.delete(ns, rng.choice(NAMES))
                written = None
        except (AlreadyExists, NotFound):
            return
        except Exception as exc:  # noqa: BLE001 - refused by validation (an empty-valued label key...)
            assert type(exc).__name__ == "InvalidArgument", exc
            return
        if written is not None and self.db.active_group() is None:  # committed: in the file now
            match = [r for r in fresh(self.db, ns)[0] if r.name == written.name]
            assert [fields(r) for r in match] == [fields(written)]

    def check(self) -> None:
        for ns in NAMESPACES:
            for store in (self.store, self.other):
                self.kept += assert_current(store, ns)
            records = {r.name: r for r in fresh(self.db, ns)[0]}
            for name in self.rng.sample(NAMES, 3):
                try:
                    got = fields(self.store.get_record(ns, name))
                except NotFound:
                    got = None
                want = records.get(name.encode())
                assert got == (None if want is None else fields(want))

    def step(self) -> None:
        rng = self.rng
        what = rng.random()
        if what < 0.45:
            self.write()
        elif what < 0.6:
            ns = rng.choice(NAMESPACES)
            if rng.random() < 0.5:
                self.served_list(ns)
            else:
                rng.choice([self.store, self.other]).list_records(ns, rng.choice([(), ("labels.a==1",)]))
        elif what < 0.7:
            self.group()
        elif what < 0.75:
            self.bulk()
        elif what < 0.9:
            self.threads()
        elif what < 0.95:
            self.db.update(lambda tx: tx.bucket(b"v1").put(b"unrelated", b"%d" % rng.randrange(9)))
        else:
            # a write that fails after changing the tx, on the lone path: rolled back
            def failing(tx: Any) -> None:
                tx.bucket(b"v1").put(b"unrelated", b"gone")
                raise RuntimeError("roll back")
            with pytest.raises(RuntimeError):
                self.db.update(failing)
        if what < 0.75 and rng.random() < 0.6:
            # the server's List right after writes (or a List): spliced when its answer was kept
            self.served_list(self.last_ns if rng.random() < 0.7 else rng.choice(NAMESPACES))
        self.check()

    def served_list(self, ns: str) -> None:
        """The server's unfiltered List: an answer kept, spliced or framed, always the file's."""
        answer = self.servicer.List(images_pb2.ListImagesRequest(), _Context(ns))
        assert answer == list_response(fresh(self.db, ns)[0])

    def group(self) -> None:
        group = self.db.open_group()
        assert group is not None
        poisoned = False
        with group:
            for _ in range(self.rng.randint(1, 5)):
                try:
                    self.write(self.store)
                except GroupPoisoned:
                    poisoned = True
                    break
            if not poisoned and self.rng.random() < 0.2:
                ns = self.rng.choice(NAMESPACES)
                try:  # a Create naming a lease that does not exist: fails after writing when the
                    # namespace had no images bucket, before writing otherwise
                    self.store.create(ns, image(f"poison-{self.rng.random()}", {"containerd.io/gc.expire": "x"}),
                                      lease="missing")
                except GroupPoisoned:
                    poisoned = True
                except NotFound:
                    pass
            if not poisoned and self.rng.random() < 0.1:
                def spoil(tx: Any) -> None:
                    tx.bucket(b"v1").put(b"unrelated", b"spoilt")
                    raise RuntimeError("fails after writing")
                with pytest.raises(GroupPoisoned):
                    self.db.batch(spoil)
                poisoned = True
        if poisoned or self.rng.random() < 0.1:
            group.abandon()
        else:
            group.commit()
            group.finish()

    def bulk(self) -> None:
        """Many changes to one namespace in one commit (merged, not placed one by one)."""
        ns, rng = self.rng.choice(NAMESPACES), self.rng
        group = self.db.open_group()
        assert group is not None
        with group:
            for i in rng.sample(range(60), rng.randint(17, 40)):
                name = f"bulk/{i:02d}"
                try:
                    if rng.random() < 0.6:
                        self.store.create(ns, random_image(rng, name))
                    else:
                        self.other.delete(ns, name)
                except (AlreadyExists, NotFound):
                    pass
                except Exception as exc:  # noqa: BLE001
                    assert type(exc).__name__ == "InvalidArgument", exc
        group.commit()
        self.bulks += 1

    def threads(self) -> None:
        """Concurrent writers (batches: duplicate Creates fail and are retried
        alone) with a reader listing all the while."""
        writers = 4
        barrier = threading.Barrier(writers + 1)
        done = threading.Event()
        failures: list[BaseException] = []
        seeds = [self.rng.randrange(1 << 30) for _ in range(writers)]
        name = self.rng.choice(NAMES)

        def writer(seed: int) -> None:
            rng = random.Random(seed)
            barrier.wait()
            try:
                for _ in range(3):
                    try:
                        self.store.create(NAMESPACES[0], random_image(rng, name))  # all but one fail
                    except AlreadyExists:
                        pass
                    try:
                        rng.choice([self.store, self.other]).update(
                            rng.choice(NAMESPACES), random_image(rng), rng.choice(MASKS))
                    except (NotFound, AlreadyExists):
                        pass
                    except Exception as exc:  # noqa: BLE001
                        if type(exc).__name__ != "InvalidArgument":
                            raise
            except BaseException as exc:  # noqa: BLE001 - reported below
                failures.append(exc)

        def reader() -> None:
            barrier.wait()
            while not done.is_set():
                for ns in NAMESPACES:
                    self.store.list_records(ns)
        threads = [threading.Thread(target=writer, args=(s,)) for s in seeds]
        listing = threading.Thread(target=reader)
        for t in threads:
            t.start()
        listing.start()
        for t in threads:
            t.join()
        done.set()
        listing.join()
        assert not failures, failures


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_sessions_keep_snapshots_true(tmp_path: pathlib.Path, seed: int, monkeypatch) -> None:
    splices = []
    real_spliced = image_records.spliced

    def counted(*args: Any) -> Any:
        splices.append(len(args[2]))
        return real_spliced(*args)
    monkeypatch.setattr(image_records, "spliced", counted)
    db = MetadataDB(tmp_path / "meta.db", no_sync=True)
    try:
        session = Session(db, random.Random(seed))
        for _ in range(slow_budget(150)):
            session.step()
        # the snapshots were there to be checked most of the time, not just after Lists
        assert session.kept > 150 and session.bulks > 0
        # and Lists were answered by splicing, with one edit and with several
        assert len(splices) > 5 and max(splices) > 1, splices
    finally:
        db.close()


def test_a_spliced_answer_is_the_answer_framed_afresh() -> None:
    rng = random.Random(7)
    for round_ in range(300):
        names = sorted(rng.sample(range(1000), rng.randrange(0, 30)))
        records = [RawImage(b"img/%03d" % i, has_target=True, digest=D1.encode(), media_type=MT.encode(),
                            size=b"\x02", labels=[(b"k", b"v" * rng.randrange(200))]) for i in names]
        answer, sizes = list_answer(records)
        after = list(records)
        edits = []
        for at in sorted(rng.sample(range(len(records) + 1), rng.randrange(0, min(5, len(records) + 1)))):
            removed = at < len(records) and rng.random() < 0.6
            new = None if rng.random() < 0.3 else RawImage(
                b"new/%d" % round_, has_target=True, labels=[(b"x", b"y" * rng.randrange(300))])
            if not removed and new is None:
                continue
            edits.append((at, removed, None if new is None else list_response([new])))
        # the same edits on the records, from the last so the indexes hold
        for at, removed, framed in reversed(edits):
            put = [] if framed is None else [RawImage(b"new/%d" % round_, has_target=True)]
            after[at:at + removed] = put
        got, got_sizes = image_records.spliced(answer, sizes, edits)
        want_parts = []
        old_parts, offset = [], 0
        for size in sizes:
            old_parts.append(answer[offset:offset + size])
            offset += size
        for at, removed, framed in reversed(edits):
            old_parts[at:at + removed] = [] if framed is None else [framed]
        want_parts = old_parts
        assert got == b"".join(want_parts), f"round {round_}"
        assert list(got_sizes) == [len(p) for p in want_parts]
        assert len(got_sizes) == len(after)


def test_splice_refuses_edits_out_of_order_or_range() -> None:
    records = [RawImage(b"a", has_target=True), RawImage(b"b", has_target=True)]
    answer, sizes = list_answer(records)
    frame = list_response([RawImage(b"c", has_target=True)])
    for edits in ([(2, True, None)], [(3, False, frame)], [(1, False, frame), (0, False, frame)], [(-1, False, frame)]):
        with pytest.raises(ValueError, match="out of order or range"):
            image_records.spliced(answer, sizes, edits)
    # at the end, adding: fine
    got, got_sizes = image_records.spliced(answer, sizes, [(2, False, frame)])
    assert got == answer + frame and list(got_sizes) == list(sizes) + [len(frame)]


def test_advance_moves_only_snapshots_of_the_commit_before() -> None:
    snaps = image_records.Snapshots()
    a = image_records.from_image(image("a"))
    snaps.keep("x", 5, [a], image_records.walk_size(a))
    snaps.advance(7, [])  # commit 6 was never heard of: what was kept at 5 may be wrong now
    assert snaps.current("x", 7) is None and snaps.current("x", 5) is None
    snaps.keep("x", 7, [a], image_records.walk_size(a))
    snaps.keep("y", 7, [a], image_records.walk_size(a))
    snaps.advance(8, [])  # a commit that changed no image record: the same records, later
    assert snaps.current("x", 8).records == [a]
    snaps.advance(9, ["not an image change"])  # anything else declared: changes unknown
    assert snaps.current("x", 9) is None and snaps.current("y", 9) is None
    snaps.keep("x", 8, [a], image_records.walk_size(a))  # a read older than a commit heard of
    assert snaps.current("x", 8) is None


def test_lease_writes_and_the_expiry_sweep_keep_snapshots_current(meta_db: MetadataDB) -> None:
    """Leases hold image names, never records: their writes declare so, and
    a List after a pull's lease bookkeeping, or after the minute's sweep,
    still frames what it kept."""
    from datetime import datetime, timedelta, timezone

    from boltimages.api.containerd.services.leases.v1 import leases_pb2 as api
    from boltimages.server.leases_service import LeasesServicer, remove_expired

    class Context:
        def invocation_metadata(self) -> tuple:
            return (("containerd-namespace", "ns"),)

        def abort(self, code: Any, message: str) -> None:
            raise AssertionError(f"{code}: {message}")

    store = ImageStore(meta_db)
    store.create("ns", image("a"))
    listed = store.list_records("ns")
    leases = LeasesServicer(meta_db)
    soon = (datetime.now(timezone.utc) + timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    leases.Create(api.CreateRequest(id="pull", labels={"containerd.io/gc.expire": soon}), Context())
    leases.AddResource(api.AddResourceRequest(id="pull", resource=api.Resource(id="sha256:" + "0" * 64,
                                                                               type="content")), Context())
    store.create("ns", image("b", {"containerd.io/gc.expire": soon}), lease="pull")
    leases.DeleteResource(api.DeleteResourceRequest(id="pull", resource=api.Resource(
        id="sha256:" + "0" * 64, type="content")), Context())
    assert assert_current(store, "ns")
    assert remove_expired(meta_db, datetime.now(timezone.utc) + timedelta(minutes=1)) == [("ns", "pull")]
    assert assert_current(store, "ns")
    leases.Create(api.CreateRequest(id="other"), Context())
    leases.Delete(api.DeleteRequest(id="other"), Context())
    snapshot = store.snapshot_now("ns")
    assert snapshot is not None and [r.name for r in snapshot.records] == [b"a", b"b"]
    assert listed[0] is snapshot.records[0]  # the record read by the first List, kept all along
    assert assert_current(store, "ns")
