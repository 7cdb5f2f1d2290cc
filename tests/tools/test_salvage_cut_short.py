"""`salvage` on a file whose last commit was cut short: data pages written, meta not.

bbolt (tx.Commit: spill, write the dirty pages, sync, write the meta, sync)
protects the pages of the newest committed tree N from the next commit, but
not those of the previous one O: the pages N freed are released when the next
write transaction begins (freelist.release from DB.beginRWTx, or at once when
a NoFreelistSync file is reopened: the freelist is rebuilt from N's
reachability). A commit after N that was killed before its meta reached the
disk (containerd stopped by SIGTERM while its garbage collector commits) thus
leaves its own nodes on pages O's tree still points at. Reading O's tree then
reads records of a commit that never happened.

The files here are written by real bbolt (the oracle, NoFreelistSync as
containerd 1.7+ keeps them) in several commits; the cut-short commit is the
same last commit with the two meta pages put back as they were before it.
"""

from __future__ import annotations

import pytest

from boltimages.store import codec
from boltimages.tools import rawpages, salvage
from tests.tools.salvage_helpers import LOST_AND_FOUND, score, tree_records

pytestmark = pytest.mark.compat

NS = (b"v1", b"default")
IMAGES = [b"example.com/img%d:v%d" % (i, i) for i in range(10)]


def _hex(path: tuple[bytes, ...]) -> list[str]:
    return [p.hex() for p in path]


def _put(path: tuple[bytes, ...], key: bytes, value: bytes) -> dict:
    return {"op": "put", "path": _hex(path), "key": key.hex(), "value": value.hex()}


def _when(seconds: int) -> bytes:
    return codec.encode_time(codec.Timestamp(seconds, 0))


def _image(name: bytes, seconds: int, n: int) -> list[dict]:
    path = NS + (b"images", name)
    return [{"op": "create_bucket", "path": _hex(path)},
            {"op": "create_bucket", "path": _hex(path + (b"target",))},
            _put(path + (b"target",), b"digest", b"sha256:%064d" % n),
            _put(path + (b"target",), b"mediatype", b"application/vnd.oci.image.manifest.v1+json"),
            _put(path + (b"target",), b"size", b"%d" % (1000 + n)),
            _put(path, b"createdat", _when(seconds)),
            _put(path, b"updatedat", _when(seconds))]


def _blob(digest: bytes, n: int) -> list[dict]:
    path = NS + (b"content", b"blob", digest)
    return [{"op": "create_bucket", "path": _hex(path)},
            _put(path, b"size", b"%d" % (100 + n)),
            _put(path, b"createdat", _when(1000 + n)),
            {"op": "create_bucket", "path": _hex(path + (b"labels",))},
            _put(path + (b"labels",), b"containerd.io/gc.ref.content.l.%d" % n, b"sha256:%064d" % (7 * n))]


def _history() -> tuple[list[dict], list[bytes]]:
    """Ops of a containerd-like history, one commit per import step; the blobs left at the end."""
    ops = [{"op": "create_bucket", "path": _hex(NS[:1])}, _put(NS[:1], b"version", b"\x03"),
           {"op": "create_bucket", "path": _hex(NS)}]
    for bucket in ((b"images",), (b"content",), (b"content", b"blob"), (b"leases",)):
        ops.append({"op": "create_bucket", "path": _hex(NS + bucket)})
    ops.append({"op": "commit"})
    blobs: list[bytes] = []
    for i, name in enumerate(IMAGES):
        for k in range(4):
            digest = b"sha256:%063d%d" % (i * 100 + k, k)
            blobs.append(digest)
            ops += _blob(digest, i * 100 + k)
        ops.append({"op": "commit"})
        ops += _image(name, 5000 + i, i)
        ops.append({"op": "commit"})
        # the import's lease, and a collection of two blobs: commits that free pages
        ops += [{"op": "create_bucket", "path": _hex(NS + (b"leases", b"lease%d" % i))}, {"op": "commit"},
                {"op": "delete_bucket", "path": _hex(NS + (b"leases", b"lease%d" % i))}, {"op": "commit"}]
        for digest in blobs[i * 2:i * 2 + 2]:
            ops.append({"op": "delete_bucket", "path": _hex(NS + (b"content", b"blob", digest))})
        ops.append({"op": "commit"})
    return ops, blobs[len(IMAGES) * 2:]


def _cut_short(ops: list[dict]) -> list[dict]:
    """The commit that never completes: every image written anew (new times), blobs collected."""
    out: list[dict] = []
    for i, name in enumerate(IMAGES):
        out.append({"op": "delete_bucket", "path": _hex(NS + (b"images", name))})
        out += _image(name, 9000 + i, i)
    return out + ops + [{"op": "commit"}]


def _crash(oracle, path, no_freelist_sync: bool) -> tuple[bytes, bytes]:
    """(the file as its last commit left it, the same file after a later commit cut short)."""
    history, blobs = _history()
    oracle.apply(path, history, page_size=4096, no_freelist_sync=no_freelist_sync)
    before = path.read_bytes()
    collect = [{"op": "delete_bucket", "path": _hex(NS + (b"content", b"blob", d))} for d in blobs[::3]]
    oracle.apply(path, _cut_short(collect), no_freelist_sync=no_freelist_sync)
    after = bytearray(path.read_bytes())
    ps = rawpages.RawFile(before).page_size
    after[:2 * ps] = before[:2 * ps]  # its meta never reached the disk
    return before, bytes(after)


@pytest.fixture(scope="module")
def crashed(oracle, tmp_path_factory) -> tuple[bytes, bytes]:
    """A file kept without a freelist (containerd 1.7+), before and after the cut-short commit."""
    return _crash(oracle, tmp_path_factory.mktemp("cut-short") / "meta.db", True)


@pytest.fixture(scope="module")
def crashed_with_freelist(oracle, tmp_path_factory) -> tuple[bytes, bytes]:
    """The same with a freelist page in each commit (containerd 1.6)."""
    return _crash(oracle, tmp_path_factory.mktemp("cut-short-fl") / "meta.db", False)


def _records(data: bytes, slot: int) -> set:
    raw = rawpages.RawFile(data)
    walk = rawpages.TolerantReader(raw, raw.metas[slot]).read()
    assert not walk.losses
    return tree_records(walk.root)


def _in_tree(tree: rawpages.Bucket) -> set:
    return tree_records(rawpages.Bucket(tree.sequence, dict(tree.values),
                                        {k: v for k, v in tree.buckets.items() if k != LOST_AND_FOUND}))


def test_the_cut_short_commit_rewrote_pages_of_the_previous_tree(crashed):
    """The premise: the newest tree is untouched, the previous one now reads other records."""
    before, after = crashed
    newest, older = rawpages.RawFile(before).valid_metas()
    assert _records(after, newest.slot) == _records(before, newest.slot)
    assert _records(after, older.slot) - _records(before, older.slot) - _records(before, newest.slot)


def test_lost_newest_root_does_not_bring_back_the_cut_short_commit(crashed):
    """The newest root page is lost: the previous commit's tree may only stand in for it where no
    later write can have changed it; nothing the cut-short commit wrote comes into the tree."""
    before, after = crashed
    newest = rawpages.RawFile(before).valid_metas()[0]
    truth = _records(before, 0) | _records(before, 1)
    damaged = bytearray(after)
    ps = rawpages.RawFile(before).page_size
    damaged[newest.root * ps:(newest.root + 1) * ps] = bytes(ps)
    result = salvage.recover(bytes(damaged))
    assert sorted(_in_tree(result["tree"]) - truth)[:3] == []
    # every record of the newest commit on an intact page is still recovered (in place or set aside)
    assert score(before, {newest.root}, result["tree"]).missing == []


@pytest.mark.parametrize("which", ["crashed", "crashed_with_freelist"])
def test_every_page_zeroed_after_a_cut_short_commit(which, request):
    """Each page but the metas zeroed in turn: no record of the cut-short commit in the tree."""
    before, after = request.getfixturevalue(which)
    raw = rawpages.RawFile(before)
    truth = _records(before, 0) | _records(before, 1)
    ps = raw.page_size
    for pgid in range(2, raw.valid_metas()[0].pgid):
        damaged = bytearray(after)
        damaged[pgid * ps:(pgid + 1) * ps] = bytes(ps)
        result = salvage.recover(bytes(damaged))
        assert sorted(_in_tree(result["tree"]) - truth)[:3] == [], pgid


def test_lost_newest_meta_without_a_freelist_is_reported_unproven(crashed):
    """With the newest meta lost and no freelist, the surviving meta may be the newest commit (its tree
    safe) or the previous one (its tree maybe rewritten by the cut-short commit): nothing on the pages
    tells which, so salvage reads the survivor's tree and says that its last commit is unproven."""
    before, after = crashed
    result = _zero_meta(before, after, newest=True)
    assert salvage.UNPROVEN_LAST_COMMIT in result["report"]["notes"]
    assert salvage.UNPROVEN_LAST_COMMIT not in salvage.recover(after)["report"]["notes"]  # both metas whole


def _zero_meta(before: bytes, after: bytes, newest: bool) -> dict:
    raw = rawpages.RawFile(before)
    slot = raw.valid_metas()[0 if newest else 1].slot
    damaged = bytearray(after)
    damaged[slot * raw.page_size:(slot + 1) * raw.page_size] = bytes(raw.page_size)
    return salvage.recover(bytes(damaged))


def test_lost_newest_meta_with_a_freelist_rebuilds_the_newest_not_the_cut_short_commit(crashed_with_freelist):
    """Both the newest commit and the cut-short one after it are whole on the pages (freelist, tree
    and metas cover [0, N) exactly). Next to the surviving meta (txid t) only t + 1 can have
    committed, and the cut-short commit is built on the newest one: the newest is used, and the
    pages the cut-short commit wrote past its high water mark do not make it look older."""
    before, after = crashed_with_freelist
    newest = rawpages.RawFile(before).valid_metas()[0]
    truth = _records(before, 0) | _records(before, 1)
    result = _zero_meta(before, after, newest=True)
    assert any(f"complete commit (root page {newest.root}," in note for note in result["report"]["notes"])
    assert sorted(_in_tree(result["tree"]) - truth)[:3] == []
    assert score(before, set(), result["tree"]).missing == []
    assert _in_tree(result["tree"]) >= _records(before, newest.slot)


def test_lost_previous_meta_with_a_freelist_is_reported_unproven(crashed_with_freelist):
    """With the previous meta lost, the cut-short commit is whole on the pages and one commit newer than
    the survivor, exactly as a committed one whose meta page was damaged would be: salvage takes it as
    the newest, and says that its last commit is unproven."""
    before, after = crashed_with_freelist
    result = _zero_meta(before, after, newest=False)
    assert salvage.UNPROVEN_LAST_COMMIT in result["report"]["notes"]


def test_previous_tree_rewritten_by_a_later_commit_places_nothing_against_containerds_layout(
        crashed_with_freelist):
    """The cut-short commit's nodes land on pages of the previous tree that the newest commit
    freed: emulated here by copying each page of the newest commit's tree onto each such page in
    turn. With the newest root page lost, the page scan must not take the paths the previous tree
    now shows for its subtrees where they contradict what they are (a v1 bucket under
    content/blob, a namespace at the root)."""
    before, _after = crashed_with_freelist
    raw = rawpages.RawFile(before)
    newest, older = raw.valid_metas()
    ps = raw.page_size
    walk = rawpages.TolerantReader(raw, newest).read()
    freed = rawpages.TolerantReader(raw, older).read().visited - walk.visited
    sources = sorted(p for p in walk.visited if p != newest.root)
    truth = _records(before, 0) | _records(before, 1)
    assert freed and sources
    for target in sorted(freed):
        for source in sources:
            damaged = bytearray(before)
            damaged[target * ps:(target + 1) * ps] = before[source * ps:(source + 1) * ps]
            damaged[target * ps:target * ps + 8] = target.to_bytes(8, "little")  # the page's own id
            damaged[newest.root * ps:(newest.root + 1) * ps] = bytes(ps)
            result = salvage.recover(bytes(damaged))
            assert sorted(_in_tree(result["tree"]) - truth)[:3] == [], (target, source)


def test_no_plain_value_is_adopted_at_the_root_whatever_the_previous_tree_says(crashed_with_freelist):
    """The newest root page is lost and the previous tree, read through a page a later commit
    rewrote, names the newest v1 leaf a page of the root bucket: its plain values (v1/version) must
    not be adopted there. bbolt's root bucket holds buckets only."""
    before, _after = crashed_with_freelist
    raw0 = rawpages.RawFile(before)
    newest, older = raw0.valid_metas()
    ps = raw0.page_size
    v1_page = rawpages.TolerantReader(raw0, newest).read().page_of[(NS[:1], b"version")]
    damaged = bytearray(before)
    damaged[newest.root * ps:(newest.root + 1) * ps] = bytes(ps)
    raw = rawpages.RawFile(bytes(damaged))
    walk = rawpages.TolerantReader(raw, newest).read()
    previous = rawpages.TolerantReader(raw, older).read()
    previous.page_path[v1_page] = ()
    report: dict = {"recovered_orphans": [], "ambiguous_orphans": [], "notes": []}
    salvage._adopt_orphans(raw, newest, walk, previous, report)
    assert walk.root.values == {}
