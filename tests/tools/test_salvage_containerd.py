"""`salvage` on containerd metadata files damaged in known ways.

Each case damages a copy of a real containerd file, salvages it, and checks:
the output passes real bbolt's check (Go oracle), every record outside the
damaged pages is in it byte for byte, the report names the damaged page, and
containerd starts on the output and lists every image that was not lost.
"""

from __future__ import annotations

import json
import struct

import pytest

from boltimages.tools import rawpages
from tests.compat.ctr_runner import table_rows
from tests.tools.conftest import IMAGES, ctr_on
from tests.tools.salvage_helpers import LOST_AND_FOUND, dump_tree, expected_after_losing, read_intact

pytestmark = pytest.mark.compat

ALL_REFS = {(ns, ref) for ns, ref, _ in IMAGES} | {("default", "docker.io/library/alpha:latest")}


def _salvage(cli, root, tmp_path):
    out = tmp_path / "salvaged.db"
    report = tmp_path / "report.json"
    res = cli("salvage", "--db", str(root.db), "-o", str(out), "--report", str(report))
    assert res.rc in (0, 5), res.stderr
    assert "Traceback" not in res.stderr
    return out, json.loads(report.read_text()), res


def _oracle_entries(oracle, path):
    return set(oracle.dump(path))


def _image_leaf(data, ns, ref):
    walk = read_intact(data)
    return walk.page_of[((b"v1", ns.encode(), b"images"), ref.encode())]


def _install_and_list(root, out, start_containerd):
    root.db.write_bytes(out.read_bytes())
    daemon = start_containerd(root)
    seen = set()
    for ns in ("default", "other"):
        for row in table_rows(ctr_on(daemon, ns, "images", "check")):
            assert row[3] == "complete", row
            seen.add((ns, row[0]))
    return seen


def test_zeroed_leaf_loses_only_its_image(cli, root, oracle, tmp_path, start_containerd):
    data = bytearray(root.db.read_bytes())
    ps = rawpages.RawFile(bytes(data)).page_size
    # the leaf holding gamma's record (its own inline-free page, or its parent's leaf)
    walk = read_intact(bytes(data))
    victim = walk.page_of[((b"v1", b"default", b"images", b"example.com/team/gamma:latest"), b"target")]
    if victim is None:
        victim = _image_leaf(bytes(data), "default", "example.com/team/gamma:latest")
    expected = set(expected_after_losing(bytes(data), [victim]))
    data[victim * ps:(victim + 1) * ps] = bytes(ps)
    root.db.write_bytes(bytes(data))
    out, report, res = _salvage(cli, root, tmp_path)
    assert res.rc == 5 and f"page {victim}" in res.stdout
    assert [d["page"] for d in report["lost_detail"]] == [victim]
    assert oracle.check(out) == []
    got = set(dump_tree(rawpages.TolerantReader(rawpages.RawFile(out.read_bytes()),
                                                rawpages.RawFile(out.read_bytes()).valid_metas()[0]).read().root))
    assert got == _oracle_entries(oracle, out)
    # everything outside the page survives, except the incomplete image record salvage drops on purpose
    gamma = "/".join(x.hex() for x in (b"v1", b"default", b"images", b"example.com/team/gamma:latest"))
    assert {line for line in expected - got if gamma not in line} == set()
    shelf = LOST_AND_FOUND.hex()
    assert {line for line in got if not line.split()[1].startswith(shelf)} <= expected
    # the half image is kept in lost-and-found under its own name, not dropped
    assert any(d["name"].endswith("example.com/team/gamma:latest") for d in report["lost_and_found"])
    assert _install_and_list(root, out, start_containerd) == ALL_REFS - {("default", "example.com/team/gamma:latest")}


def test_zeroed_meta_page(cli, root, oracle, tmp_path, start_containerd):
    data = bytearray(root.db.read_bytes())
    raw = rawpages.RawFile(bytes(data))
    newest = raw.valid_metas()[0]
    data[newest.slot * raw.page_size:(newest.slot + 1) * raw.page_size] = bytes(raw.page_size)
    root.db.write_bytes(bytes(data))
    out, report, res = _salvage(cli, root, tmp_path)
    # either the zeroed commit is found whole on the pages and used, or (when the two commits cannot
    # be ordered) the surviving one is used and the other's differing records go to lost-and-found
    assert res.rc in (0, 5)
    assert res.rc == 0 or report["lost_and_found"]
    assert oracle.check(out) == []
    # the previous commit is complete: containerd's last transaction was a label or tag at most
    seen = _install_and_list(root, out, start_containerd)
    assert seen <= ALL_REFS and len(seen) >= len(ALL_REFS) - 1


def test_truncated_tail(cli, root, oracle, tmp_path, start_containerd):
    data = root.db.read_bytes()
    raw = rawpages.RawFile(data)
    hwm = raw.valid_metas()[0].pgid
    root.db.write_bytes(data[:(hwm - 2) * raw.page_size])
    out, report, res = _salvage(cli, root, tmp_path)
    assert oracle.check(out) == []
    seen = _install_and_list(root, out, start_containerd)
    assert seen <= ALL_REFS


def test_double_freed_page(cli, root, oracle, tmp_path, start_containerd):
    data = bytearray(root.db.read_bytes())
    raw = rawpages.RawFile(bytes(data))
    meta = raw.valid_metas()[0]
    free = raw.freelist(meta)
    assert free is not None
    in_use = _image_leaf(bytes(data), "default", "docker.io/library/beta:2")
    ids = sorted(free | {in_use})
    off = meta.freelist * raw.page_size
    _pid, flags, _count, overflow = struct.unpack_from("<QHHI", data, off)
    struct.pack_into("<QHHI", data, off, meta.freelist, flags, len(ids), overflow)
    struct.pack_into(f"<{len(ids)}Q", data, off + 16, *ids)
    root.db.write_bytes(bytes(data))
    assert oracle.check(root.db) != []  # bbolt sees the damage
    before = set(dump_tree(read_intact(bytes(data)).root))
    out, report, res = _salvage(cli, root, tmp_path)
    assert res.rc == 0 and any("double free" in n for n in report["notes"])
    assert oracle.check(out) == []
    assert _oracle_entries(oracle, out) == before
    assert _install_and_list(root, out, start_containerd) == ALL_REFS


def test_zeroed_branch_page_of_a_big_images_bucket(cli, root, oracle, tmp_path, start_containerd):
    tags = [f"example.com/many/t:{i:04d}" for i in range(400)]
    assert cli("tag", "--db", str(root.db), "--no-backup", "docker.io/library/alpha:1", *tags).rc == 0
    data = bytearray(root.db.read_bytes())
    raw = rawpages.RawFile(bytes(data))
    walk = read_intact(bytes(data))
    intact = set(dump_tree(walk.root))
    images_leaf_pages = {p for (path, _k), p in walk.page_of.items() if path == (b"v1", b"default", b"images")}
    branches = {walk.parent[p] for p in images_leaf_pages if p is not None}
    branches = [p for p in branches if p is not None and struct.unpack_from("<H", data, p * raw.page_size + 8)[0]
                == rawpages.FLAG_BRANCH]
    assert branches, "images bucket did not grow a branch page"
    victim = branches[0]
    data[victim * raw.page_size:(victim + 1) * raw.page_size] = bytes(raw.page_size)
    root.db.write_bytes(bytes(data))
    out, report, res = _salvage(cli, root, tmp_path)
    assert [d["page"] for d in report["lost_detail"]] == [victim]
    # the branch's children come back by their key range (orphan adoption) or as the images
    # bucket's part they are by shape (page scan)
    assert report["recovered_orphans"] or report["placed"]
    assert oracle.check(out) == []
    assert _oracle_entries(oracle, out) == intact  # a branch holds no records: nothing is lost
    seen = _install_and_list(root, out, start_containerd)
    assert seen == ALL_REFS | {("default", t) for t in tags}
