"""The tolerant page reader behind `salvage`, against files written by real bbolt.

Intact files: what the raw reader recovers must equal bbolt's own dump. Damaged
files (zeroed meta, zeroed/bit-flipped branch and leaf pages, truncated tail,
double-freed page): everything outside the damaged pages comes back, the loss
report names the damaged pages, and nothing that was not in the file appears.
"""

from __future__ import annotations

import struct

import pytest

from boltimages.tools import rawpages, salvage
from tests.tools.salvage_helpers import (LOST_AND_FOUND, dump_tree, expected_after_losing, pages_of_kind,
                                         page_header, read_intact, score, unsequenced)

pytestmark = pytest.mark.compat

#: hex of the lost-and-found bucket's name, as dump lines spell paths
SHELF = LOST_AND_FOUND.hex()

GEN_CASES = [
    dict(seed=1, page_size=4096),
    dict(seed=2, page_size=1024),
    dict(seed=3, page_size=16384),
    dict(seed=4, page_size=4096, no_freelist_sync=True),
    dict(seed=5, page_size=4096, big_values=True),
    dict(seed=6, page_size=4096, large_freelist=True),
]


def _gen(oracle, tmp_path, **kw) -> bytes:
    path = tmp_path / f"gen-{kw['seed']}.db"
    oracle.gen(path, **kw)
    return path.read_bytes()


@pytest.mark.parametrize("case", GEN_CASES, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_intact_files_read_like_bbolt(oracle, tmp_path, case):
    data = _gen(oracle, tmp_path, **case)
    result = salvage.recover(data)
    assert result["report"]["lost"] == []
    assert dump_tree(result["tree"]) == oracle.dump(tmp_path / f"gen-{case['seed']}.db")


def test_zeroed_newest_meta_is_rebuilt_from_its_pages(oracle, tmp_path):
    """The newest commit's meta is gone but its tree and freelist are intact: salvage finds that commit
    (its tree, freelist and metas cover the file exactly; its high water mark is above the survivor's)."""
    data = bytearray(_gen(oracle, tmp_path, seed=11, page_size=4096))
    raw = rawpages.RawFile(bytes(data))
    newest, older = raw.valid_metas()
    intact = dump_tree(read_intact(bytes(data)).root)
    original = bytes(data)
    ps = raw.page_size
    data[newest.slot * ps:(newest.slot + 1) * ps] = bytes(ps)
    result = salvage.recover(bytes(data))
    report = result["report"]
    assert any("invalid" in n for n in report["notes"])
    if newest.pgid > older.pgid:
        assert any("complete commit" in n and "newest" in n for n in report["notes"]), report["notes"]
        assert dump_tree(result["tree"]) == intact
    else:
        # same high water mark: the two commits cannot be ordered; the survivor is used and the
        # other's differing records are kept in lost-and-found
        assert report["meta_used"] == older.slot
        assert score(original, set(), result["tree"]).missing == []


@pytest.mark.parametrize("how,nofl", [("zero", False), ("bitflip-header", False), ("zero", True)],
                         ids=["zero", "bitflip-header", "zero-nofreelistsync"])
def test_damaged_leaf_loses_only_that_page(oracle, tmp_path, how, nofl):
    data = bytearray(_gen(oracle, tmp_path, seed=12, page_size=4096, no_freelist_sync=nofl))
    ps = rawpages.RawFile(bytes(data)).page_size
    leaves = pages_of_kind(bytes(data), rawpages.FLAG_LEAF)
    assert len(leaves) > 4
    victim = leaves[len(leaves) // 2]
    expected = expected_after_losing(bytes(data), [victim])
    intact = dump_tree(read_intact(bytes(data)).root)
    if how == "zero":
        data[victim * ps:(victim + 1) * ps] = bytes(ps)
    else:
        data[victim * ps + 8] ^= 0x40  # flags word: no longer a leaf
    result = salvage.recover(bytes(data))
    report = result["report"]
    assert [d["page"] for d in report["lost_detail"]] == [victim]
    recovered = [line for line in dump_tree(result["tree"]) if not line.split()[1].startswith(SHELF)]
    assert set(expected) <= set(recovered)
    # more may come back: sub-buckets whose header was on the page, found by their own pages in the
    # previous commit's tree; their sequence was in the lost header (0 then), all else as it was
    assert unsequenced(recovered) <= unsequenced(intact)


@pytest.mark.parametrize("how", ["zero", "bitflip-key"])
def test_damaged_branch_is_rebuilt_from_orphaned_leaves(oracle, tmp_path, how):
    data = bytearray(_gen(oracle, tmp_path, seed=13, page_size=1024, txs=40, ops=300))
    ps = rawpages.RawFile(bytes(data)).page_size
    root_page = rawpages.RawFile(bytes(data)).valid_metas()[0].root
    branches = [p for p in pages_of_kind(bytes(data), rawpages.FLAG_BRANCH) if p != root_page]
    assert branches, "generated file has no branch page below the root"
    intact = dump_tree(read_intact(bytes(data)).root)
    victim = branches[-1]
    if how == "zero":
        data[victim * ps:(victim + 1) * ps] = bytes(ps)
    else:
        # flip a bit of the second key's length: the element now points past the page or
        # the keys fall out of order; either way the branch cannot be trusted
        count = struct.unpack_from("<H", data, victim * ps + 10)[0]
        assert count >= 2
        data[victim * ps + 16 + 16 + 4 + 3] ^= 0x80
    result = salvage.recover(bytes(data))
    report = result["report"]
    assert [d["page"] for d in report["lost_detail"]] == [victim]
    assert report["recovered_orphans"] or report["placed"], report
    recovered = dump_tree(result["tree"])
    # the branch held no records: every record comes back through its orphaned leaves
    assert set(recovered) <= set(intact)
    missing = [line for line in intact if line not in set(recovered)]
    assert missing == [], missing[:5]


def test_truncated_tail(oracle, tmp_path):
    data = _gen(oracle, tmp_path, seed=14, page_size=4096)
    raw = rawpages.RawFile(data)
    hwm = raw.valid_metas()[0].pgid
    cut = max(4, hwm - 3)
    result = salvage.recover(data[:cut * raw.page_size])
    # when the newest root page was cut off, salvage falls back to the previous commit
    walk = read_intact(data, result["report"]["meta_used"])

    def cut_off(pgid):
        # a page is lost when it or any page on its path from the root runs past the cut
        while pgid is not None:
            if pgid + page_header(data, pgid, raw.page_size)[3] >= cut:
                return True
            pgid = walk.parent.get(pgid)
        return False

    lost_leaves = [p for p in walk.visited if cut_off(p)
                   and page_header(data, p, raw.page_size)[1] == rawpages.FLAG_LEAF]
    expected = set(expected_after_losing(data, lost_leaves, result["report"]["meta_used"]))
    recovered = {line for line in dump_tree(result["tree"]) if not line.split()[1].startswith(SHELF)}
    assert all("truncated" in d["reason"] for d in result["report"]["lost_detail"]), result["report"]["lost_detail"]
    assert unsequenced(recovered) <= unsequenced(dump_tree(walk.root))
    assert expected - recovered == set()


def test_double_freed_page_is_reported_and_content_kept(oracle, tmp_path):
    data = bytearray(_gen(oracle, tmp_path, seed=15, page_size=4096))
    raw = rawpages.RawFile(bytes(data))
    meta = raw.valid_metas()[0]
    free = raw.freelist(meta)
    assert free is not None
    leaf = pages_of_kind(bytes(data), rawpages.FLAG_LEAF)[0]
    ids = sorted(free | {leaf})
    # rewrite the freelist page listing the in-use leaf as free too (bbolt: "page already freed")
    ps = raw.page_size
    off = meta.freelist * ps
    _pid, flags, _count, overflow = struct.unpack_from("<QHHI", data, off)
    assert len(ids) < 0xFFFF and 16 + 8 * len(ids) <= (overflow + 1) * ps
    struct.pack_into("<QHHI", data, off, meta.freelist, flags, len(ids), overflow)
    struct.pack_into(f"<{len(ids)}Q", data, off + 16, *ids)
    intact = dump_tree(read_intact(bytes(data)).root)
    result = salvage.recover(bytes(data))
    assert result["report"]["lost"] == []
    assert any("double free" in n for n in result["report"]["notes"])
    assert dump_tree(result["tree"]) == intact


def test_no_valid_meta_is_one_clear_error(tmp_path):
    from boltimages.tools.common import ToolError
    with pytest.raises(ToolError, match="neither meta page is valid"):
        salvage.recover(bytes(8192))


def test_zeroed_meta0_of_a_16k_file(oracle, tmp_path):
    """bbolt refuses a 16 KiB-page file whose meta 0 is gone; salvage finds meta 1 by probing sizes."""
    data = bytearray(_gen(oracle, tmp_path, seed=16, page_size=16384))
    slot1 = rawpages.RawFile(bytes(data)).metas[1]
    expected = dump_tree(read_intact(bytes(data), 1).root)
    data[:16384] = bytes(16384)
    result = salvage.recover(bytes(data))
    assert result["report"]["page_size"] == 16384 and result["report"]["meta_used"] == 1
    assert result["report"]["txid"] == slot1.txid
    # meta 1 is the newest here, so its tree is the file's content; the pages a newer commit could
    # have written (the meta 0 that was lost might have named one) are kept aside, not in the tree
    assert [line for line in dump_tree(result["tree"]) if not line.split()[1].startswith(SHELF)] == expected
    assert all("newer commit" in d["why"] for d in result["report"]["lost_and_found"])


def test_lost_leaf_does_not_leak_its_sub_buckets_into_the_parent(oracle, tmp_path):
    """A leaf holding headers of non-inline sub-buckets is zeroed: those sub-buckets' pages become
    orphans whose keys may well fall in the parent's lost range; they must not be adopted there."""
    from boltimages import bolt
    path = tmp_path / "nested.db"
    with bolt.open(path) as db, db.begin(write=True) as tx:
        parent = tx.create_bucket(b"P")
        for i in range(400):
            child = parent.create_bucket(b"child-%04d" % i)
            # keys that sort inside the parent's key space, values big enough to need own pages
            child.put_many((b"child-%04d-%02d" % (i, j), bytes([j]) * 300) for j in range(6))
    with bolt.open(path) as db, db.begin(write=True) as tx:
        tx.bucket(b"P").put(b"child-0000-touch", b"x")  # a second commit so a previous tree exists
    assert oracle.check(path) == []
    data = bytearray(path.read_bytes())
    raw = rawpages.RawFile(bytes(data))
    walk = read_intact(bytes(data))
    p_leaves = sorted({p for (bpath, _k), p in walk.page_of.items() if bpath == (b"P",) and p is not None})
    assert len(p_leaves) >= 3
    victim = p_leaves[len(p_leaves) // 2]
    expected = expected_after_losing(bytes(data), [victim])
    ps = raw.page_size
    data[victim * ps:(victim + 1) * ps] = bytes(ps)
    result = salvage.recover(bytes(data))
    assert [d["page"] for d in result["report"]["lost_detail"]] == [victim]
    # the orphans fit the lost range, yet are not adopted into it: their names died with the page,
    # so they are kept in lost-and-found, each under its page id
    assert result["report"]["lost_and_found"] and not result["report"]["recovered_orphans"]
    assert [line for line in dump_tree(result["tree"]) if not line.split()[1].startswith(SHELF)] == expected
    assert {d["kind"] for d in result["report"]["lost_and_found"]} == {"unrecognized content"}



def _labelled_file(oracle, path) -> bytes:
    """Images whose labels buckets span several leaves under a branch, and a blob bucket of
    several leaves. The last commit adds a blob: both commits share the images' pages, and the
    previous commit's blob bucket has a root branch of its own."""
    from tests.tools.test_salvage_cut_short import NS, _blob, _hex, _image, _put
    ops = [{"op": "create_bucket", "path": _hex(NS[:1])}, _put(NS[:1], b"version", b"\x03"),
           {"op": "create_bucket", "path": _hex(NS)}, {"op": "create_bucket", "path": _hex(NS + (b"images",))},
           {"op": "create_bucket", "path": _hex(NS + (b"content",))},
           {"op": "create_bucket", "path": _hex(NS + (b"content", b"blob"))}, {"op": "commit"}]
    for i in range(60):
        ops += _blob(b"sha256:%064d" % i, i)
    ops.append({"op": "commit"})
    for i in range(4):
        name = b"example.com/labelled%d:v1" % i
        ops += _image(name, 5000 + i, i)
        labels = NS + (b"images", name, b"labels")
        ops.append({"op": "create_bucket", "path": _hex(labels)})
        # big enough for a labels bucket of several leaves under a branch
        ops += [_put(labels, b"label%02d" % j, b"x" * 300) for j in range(30)]
        ops.append({"op": "commit"})
    ops += _blob(b"sha256:%064d" % 99, 99) + [{"op": "commit"}]
    oracle.apply(path, ops, page_size=4096)
    return path.read_bytes()


@pytest.mark.parametrize("parent,second", [(("default", "images"), "labels root"),
                                           (("default", "content", "blob"), "image record"),
                                           ((), "labels root")],
                         ids=["images-and-labels-root", "blob-and-image-record", "v1-and-labels-root"])
def test_leaves_of_a_lost_sub_bucket_root_are_not_taken_for_its_parents(oracle, tmp_path, parent, second):
    """Two pages lost: the root page of a bucket of containerd's that holds only sub-buckets (the
    images bucket's root leaf, the blob bucket's root branch) or only a few plain values (v1: its
    version), and the branch root of one image's labels bucket or the image's own leaf (which names
    that bucket). The labels' pages then tile a key space of their own and fit the lost page's key
    range, as its own children would; they must not be poured into it. (For v1 the previous
    commit's v1 page is lost too, or its being a leaf would already say no branch was lost.)"""
    from tests.tools.test_salvage_cut_short import NS
    data = bytearray(_labelled_file(oracle, tmp_path / "labels.db"))
    original = bytes(data)
    raw = rawpages.RawFile(original)
    walk = read_intact(original)

    def root_page(bucket: tuple[bytes, ...]) -> int:
        flags = walk.root_flags[bucket]
        return next(p for p, where in walk.page_path.items()
                    if where == bucket and page_header(original, p, raw.page_size)[1] == flags
                    and (flags == rawpages.FLAG_LEAF or walk.parent.get(p) not in
                         {q for q, w in walk.page_path.items() if w == bucket}))

    bucket = NS[:1] + tuple(p.encode() for p in parent)
    assert walk.root_flags[bucket] == (rawpages.FLAG_BRANCH if b"blob" in bucket else rawpages.FLAG_LEAF)
    labelled = sorted(p for p, flags in walk.root_flags.items() if p[-1:] == (b"labels",)
                      and flags == rawpages.FLAG_BRANCH)
    assert labelled, "no labels bucket grew a branch root"
    image_leaf = walk.page_of[(labelled[0][:-1], b"labels")]
    victims = {root_page(bucket), root_page(labelled[0]) if second == "labels root" else image_leaf}
    if not parent:
        previous = read_intact(original, raw.valid_metas()[1].slot)
        victims |= {p for p, where in previous.page_path.items() if where == bucket} - set(walk.visited)
    truth = set()
    for meta in raw.valid_metas():
        truth |= set(dump_tree(read_intact(original, meta.slot).root))
    ps = raw.page_size
    for victim in victims:
        data[victim * ps:(victim + 1) * ps] = bytes(ps)
    result = salvage.recover(bytes(data))
    recovered = [line for line in dump_tree(result["tree"]) if not line.split()[1].startswith(SHELF)]
    assert unsequenced(recovered) <= unsequenced(truth)
    assert score(original, victims, result["tree"]).missing == []
