"""A small commit writes its pages as few contiguous runs, and the file
does not grow for it.

Why it matters: dirty pages reach the file as one pwritev per contiguous
run and fdatasync issues one device request per run, so an image update
that touched 7 scattered pages paid for 7 requests (see native/runs.c).
Observed from the file itself: the pages a commit added to the tree, plus
its freelist page, are counted as runs of consecutive page ids.
"""

from __future__ import annotations

import random

from boltimages import bolt
from boltimages.tools.rawpages import RawFile, TolerantReader


def _tree_pages(path: str) -> tuple[set[int], int, int]:
    """(pages of the newest tree, its freelist page, its high-water mark)."""
    with open(path, "rb") as f:
        raw = RawFile(f.read())
    meta = raw.valid_metas()[0]
    walk = TolerantReader(raw, meta).read()
    assert not walk.losses, walk.losses
    return set(walk.visited), meta.freelist, meta.pgid


def _containerd_like(db: "bolt.DB", images: int) -> list[bytes]:
    names = [f"docker.io/library/app{i}:v{i % 7}".encode() for i in range(images)]
    with db.begin(write=True) as tx:
        all_images = tx.create_bucket(b"v1").create_bucket(b"default").create_bucket(b"images")
        for name in names:
            record = all_images.create_bucket(name)
            record.put(b"createdat", b"\x01" + bytes(14))
            record.put(b"updatedat", b"\x01" + bytes(14))
            record.create_bucket(b"labels").put(b"group", b"1")
            target = record.create_bucket(b"target")
            target.put(b"digest", b"sha256:" + b"ab" * 32)
            target.put(b"mediatype", b"application/vnd.oci.image.index.v1+json")
            target.put(b"size", b"\x02")
    return names


def _update(db: "bolt.DB", name: bytes, n: int) -> None:
    with db.begin(write=True) as tx:
        record = tx.bucket(b"v1").bucket(b"default").bucket(b"images").bucket(name)
        record.put(b"updatedat", b"\x01" + n.to_bytes(14, "big"))
        record.delete_bucket(b"labels")
        record.create_bucket(b"labels").put(b"group", str(n).encode())


def _fragment(db: "bolt.DB", names: list[bytes]) -> list[bytes]:
    """Delete one record in four in one commit, leaving ~750 isolated free
    pages as after months of churn; the names still there."""
    doomed = set(names[::4])
    with db.begin(write=True) as tx:
        images = tx.bucket(b"v1").bucket(b"default").bucket(b"images")
        for name in doomed:
            images.delete_bucket(name)
    return [name for name in names if name not in doomed]


def _written_by_update(db: "bolt.DB", path: str, name: bytes, n: int) -> list[int]:
    """The pages an update of ``name`` added to the tree, plus its freelist page, sorted."""
    before, _, _ = _tree_pages(path)
    _update(db, name, n)
    after, freelist, _ = _tree_pages(path)
    return sorted((after - before) | {freelist})


def _runs(ids: list[int]) -> int:
    """How many maximal runs of consecutive ids ``ids`` (sorted) holds."""
    return sum(1 for i, pgid in enumerate(ids) if i == 0 or pgid != ids[i - 1] + 1)


def _longest_run(ids: list[int]) -> int:
    best = length = 0
    for i, pgid in enumerate(ids):
        length = length + 1 if i and pgid == ids[i - 1] + 1 else 1
        best = max(best, length)
    return best


def test_small_commits_write_few_runs(tmp_path) -> None:
    """Updates of random records in a containerd-shaped file: each commit
    rewrites a leaf, the branch above it, the bucket pages up to the root and
    the freelist, 6 or 7 pages. Taken one by one from the freelist they made
    5 or 6 runs per commit; taken as runs, at most 3 on average (the leaf
    stays live long after the pages above it are freed again, so the free
    runs that come back are often a page shorter than a whole commit)."""
    path = str(tmp_path / "runs.db")
    rng = random.Random(7)
    with bolt.open(path) as db:
        names = _containerd_like(db, 3000)
        for n in range(60):  # let the freelist settle
            _update(db, rng.choice(names), n)
        _, _, hwm_before = _tree_pages(path)
        counts = []
        for n in range(60, 100):
            written = _written_by_update(db, path, rng.choice(names), n)
            assert len(written) >= 5, written  # leaf, branch, the buckets above, freelist
            counts.append(_runs(written))
        _, _, hwm_after = _tree_pages(path)
        assert sum(counts) / len(counts) <= 3.0, counts
        assert max(counts) <= 4, counts
        # runs come from the end of the file only while fewer than 256 free
        # pages are left aside (RUN_FREE_SLACK in native/runs.c)
        assert hwm_after - hwm_before <= 256 + 32
        assert db.begin().check() == []


def test_the_file_stays_bounded_when_commit_sizes_vary(tmp_path) -> None:
    """Runs of different lengths must not each claim new pages forever:
    commits of 1 to 40 changed records, 300 of them, grow the file by far
    less than they would if every run came from the end of the file."""
    path = str(tmp_path / "vary.db")
    rng = random.Random(11)
    with bolt.open(path) as db:
        names = _containerd_like(db, 3000)
        _, _, start = _tree_pages(path)
        for n in range(300):
            with db.begin(write=True) as tx:
                images = tx.bucket(b"v1").bucket(b"default").bucket(b"images")
                for name in rng.sample(names, rng.randint(1, 40)):
                    images.bucket(name).put(b"updatedat", b"\x01" + n.to_bytes(14, "big"))
        _, _, end = _tree_pages(path)
        assert end - start < 600, f"the file grew by {end - start} pages over 300 commits"
        assert db.begin().check() == []


def test_runs_survive_a_fragmented_freelist(tmp_path) -> None:
    """A node server's file after months of churn: hundreds of free pages,
    none next to another. Commits then used to take every page alone (7 or
    8 runs for an image update) because no free run was long enough and the
    slack for taking one from the end of the file was spent. The pages near
    the top of the tree, which every commit rewrites, now go into a run of
    their own that two commits later is free again and taken whole; only
    the record's page and its leaf, which stay live, are taken alone."""
    path = str(tmp_path / "fragmented.db")
    rng = random.Random(5)
    with bolt.open(path) as db:
        names = _containerd_like(db, 3000)
        live = _fragment(db, names)
        for n in range(40):  # let the run of hot pages settle
            _update(db, rng.choice(live), n)
        _, _, hwm_before = _tree_pages(path)
        counts = []
        longest = []
        for n in range(40, 120):
            written = _written_by_update(db, path, rng.choice(live), n)
            counts.append(_runs(written))
            longest.append(_longest_run(written))
        _, _, hwm_after = _tree_pages(path)
        assert sum(counts) / len(counts) <= 4.0, counts
        # root, v1 and namespace bucket pages, the images root branch and
        # the freelist: together, in nearly every commit
        assert sum(1 for n in longest if n >= 5) >= len(longest) * 3 // 4, longest
        # the hot run comes from the end of the file twice (it alternates
        # between two copies), not once per commit
        assert hwm_after - hwm_before <= 32, (hwm_before, hwm_after)
        assert db.begin().check() == []


def test_creating_records_does_not_strand_free_runs(tmp_path) -> None:
    """New pages (a new record's) stay live after their commit, so they are
    taken alone like the long-lived ones. Put into the run with the pages
    the next commit frees, each commit left that run one page short for the
    next, which then took a fresh run from the end of the file: 7 free
    pages stranded per created image."""
    path = str(tmp_path / "creates.db")
    with bolt.open(path) as db:
        _fragment(db, _containerd_like(db, 3000))
        visited, _, hwm = _tree_pages(path)
        unused_before = hwm - len(visited)
        for n in range(200):
            with db.begin(write=True) as tx:
                images = tx.bucket(b"v1").bucket(b"default").bucket(b"images")
                record = images.create_bucket(f"registry.example/new/image-{n:05d}:1".encode())
                record.put(b"createdat", b"\x01" + bytes(14))
                record.create_bucket(b"target").put(b"digest", b"sha256:" + b"ef" * 32)
        visited, _, hwm = _tree_pages(path)
        unused_after = hwm - len(visited)
        # the free pages may only shrink (new records take them), give or
        # take the two copies of the run that alternate
        assert unused_after <= unused_before + 32, (unused_before, unused_after)
        assert db.begin().check() == []


def test_a_middle_branch_joins_the_run(tmp_path) -> None:
    """With 10,000 images the images bucket has three levels: a root
    branch, a dozen branches under it, and the leaves. An update rewrites one
    of the middle branches; taken alone, as a cold page, it made a fourth
    device request per commit (about 100 us of fdatasync on a virtual disk).
    A branch written in one of the last few commits now goes into the run
    with the pages above it, so an update writes three runs: the record's
    page, its leaf, and the rest; and the file does not grow for it."""
    path = str(tmp_path / "three-levels.db")
    rng = random.Random(3)
    with bolt.open(path) as db:
        live = _fragment(db, _containerd_like(db, 10000))
        for n in range(100):  # let the runs settle
            _update(db, rng.choice(live), n)
        start = db.info()["pgid"]
        counts = []
        for n in range(100, 400):
            _update(db, rng.choice(live), n)
            counts.append(db.info()["last_commit_runs"])
        grown = db.info()["pgid"] - start
        assert sum(counts) / len(counts) <= 3.1, counts
        assert grown <= 64, f"the file grew by {grown} pages over {len(counts)} updates"
        assert db.begin().check() == []


def test_last_commit_runs_counts_what_the_tree_shows(tmp_path) -> None:
    """info()['last_commit_runs'] is the runs of pages the commit wrote: the
    pages it added to the tree plus its freelist page."""
    path = str(tmp_path / "count.db")
    rng = random.Random(9)
    with bolt.open(path) as db:
        names = _fragment(db, _containerd_like(db, 2000))
        for n in range(30):
            written = _written_by_update(db, path, rng.choice(names), n)
            assert db.info()["last_commit_runs"] == _runs(written), written
