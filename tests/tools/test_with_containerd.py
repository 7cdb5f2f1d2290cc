"""Offline tools against metadata files written by a real containerd, verified by containerd itself.

Files come from a private containerd (tests/tools/conftest.py): OCI images
imported with `ctr images import`, a tag, labels, a second namespace. After a
tool has worked on a file, containerd is started on it again and `ctr` must
see exactly what the tool promised.
"""

from __future__ import annotations

import json
import os

import pytest

from boltimages import bolt
from boltimages.tools import treewalk
from tests.compat.ctr_runner import table_rows
from tests.helpers import settled
from tests.tools.conftest import IMAGES, ctr_on, file_sha256

pytestmark = pytest.mark.compat


def _ls_json(cli, db, *extra):
    out = cli("ls", "--db", str(db), "--format", "json", *extra)
    assert out.rc == 0, out.stderr
    return json.loads(out.stdout)


def _ctr_rows(daemon, ns, *args):
    return table_rows(ctr_on(daemon, ns, "images", *args))


def test_ls_agrees_with_ctr(cli, root, start_containerd):
    daemon = start_containerd(root)
    seen = {}
    for ns in ("default", "other"):
        seen[ns] = {row[0]: row for row in _ctr_rows(daemon, ns, "ls")}
    daemon.stop()
    doc = _ls_json(cli, root.db)
    assert {n["name"] for n in doc["namespaces"]} == {"default", "other"}
    assert [n["labels"] for n in doc["namespaces"] if n["name"] == "other"] == [{"owner": "ops"}]
    ours = {}
    for img in doc["images"]:
        ours.setdefault(img["namespace"], {})[img["name"]] = img
    for ns, rows in seen.items():
        assert set(ours[ns]) == set(rows)
        for name, row in rows.items():
            img = ours[ns][name]
            # ctr: REF TYPE DIGEST SIZE(2 cells) PLATFORMS LABELS
            assert row[1] == img["target"]["mediaType"]
            assert row[2] == img["target"]["digest"]
            labels = ",".join(f"{k}={v}" for k, v in img["labels"].items()) or "-"
            assert sorted(row[-1].split(",")) == sorted(labels.split(","))
    # table form, one namespace, a filter from containerd's language
    out = cli("ls", "--db", str(root.db), "-n", "default", "--filter", "labels.team==storage")
    assert out.rc == 0 and out.stdout.split("\n")[1].split()[0] == "docker.io/library/beta:2"
    assert len(out.stdout.strip().splitlines()) == 2
    quiet = cli("ls", "--db", str(root.db), "-n", "default", "-q", "-f", "name~=alpha")
    assert quiet.stdout.split() == ["docker.io/library/alpha:1", "docker.io/library/alpha:latest"]


def test_inspect_shows_full_record(cli, root):
    out = cli("inspect", "--db", str(root.db), "docker.io/library/beta:2")
    assert out.rc == 0, out.stderr
    [doc] = json.loads(out.stdout)
    assert doc["labels"] == {"team": "storage", "tier": "gold"}
    assert doc["target"]["annotations"] == {"org.opencontainers.image.ref.name": "docker.io/library/beta:2"}
    assert doc["createdAt"].endswith("Z") and len(doc["createdAt"].split(".")[1]) == 10
    missing = cli("inspect", "--db", str(root.db), "nope")
    assert missing.rc == 1 and "not found" in missing.stderr


def test_check_on_containerd_file(cli, root):
    out = cli("check", "--db", str(root.db))
    assert out.rc == 0, out.stdout + out.stderr
    assert "structure: ok" in out.stdout and "containerd layout: ok" in out.stdout


def test_copy_to_another_namespace_survives_gc(cli, root, start_containerd):
    out = cli("copy", "--db", str(root.db), "--to-namespace", "k8s.io", "--content-root", str(root.content),
              "--all")
    assert out.rc == 0, out.stderr
    daemon = start_containerd(root)
    default_refs = sorted(ref for ns, ref, _ in IMAGES if ns == "default") + ["docker.io/library/alpha:latest"]
    rows = _ctr_rows(daemon, "k8s.io", "check")
    assert sorted(r[0] for r in rows) == sorted(default_refs)
    assert all(r[3] == "complete" for r in rows), rows
    # GC: remove every image of the source namespace; the copies must keep their content
    ctr_on(daemon, "default", "images", "rm", "--sync", *default_refs)
    assert ctr_on(daemon, "default", "images", "ls", "-q").split() == []
    rows = _ctr_rows(daemon, "k8s.io", "check")
    assert sorted(r[0] for r in rows) == sorted(default_refs)
    assert all(r[3] == "complete" for r in rows), rows
    content = table_rows(ctr_on(daemon, "k8s.io", "content", "ls"))
    assert len(content) == 9  # 3 distinct images x (manifest, config, layer)


def test_copy_into_another_file_and_filter(cli, root, tmp_path, start_containerd):
    """Merging an old node's records into a new node's file, selected by a filter."""
    new_root = tmp_path / "newnode"
    import shutil
    shutil.copytree(root.path, new_root)
    target = type(root)(new_root)
    os.unlink(target.db)
    out = cli("copy", "--db", str(root.db), "--to-db", str(target.db), "-n", "default", "--to-namespace", "default",
              "--content-root", str(root.content), "--filter", "name~=alpha")
    assert out.rc == 0, out.stderr
    daemon = start_containerd(target)
    rows = _ctr_rows(daemon, "default", "check")
    assert sorted(r[0] for r in rows) == ["docker.io/library/alpha:1", "docker.io/library/alpha:latest"]
    assert all(r[3] == "complete" for r in rows), rows


def test_copy_conflicts(cli, root):
    base = ["copy", "--db", str(root.db), "--to-namespace", "other", "--content-root", str(root.content)]
    assert cli(*base, "docker.io/library/beta:2").rc == 0
    assert cli("label", "--db", str(root.db), "-n", "other", "docker.io/library/beta:2", "x=1").rc == 0
    before = file_sha256(root.db)
    fail = cli(*base, "docker.io/library/beta:2")
    assert fail.rc == 1 and "already exists" in fail.stderr
    assert cli(*base, "--on-conflict", "skip", "docker.io/library/beta:2").rc == 0
    assert file_sha256(root.db) == before
    assert cli(*base, "--on-conflict", "overwrite", "--no-backup", "docker.io/library/beta:2").rc == 0
    [doc] = json.loads(cli("inspect", "--db", str(root.db), "-n", "other", "docker.io/library/beta:2").stdout)
    assert "x" not in doc["labels"]


def _subtree_entries(path, *bucket_path):
    with bolt.open(path, read_only=True) as db, db.begin() as tx:
        bucket = tx.bucket(bucket_path[0])
        for name in bucket_path[1:]:
            bucket = bucket.bucket(name) if bucket is not None else None
        if bucket is None:
            return []
        return list(treewalk._walk(bucket, ()))


def test_export_import_reproduces_records_exactly(cli, root, tmp_path):
    dump = tmp_path / "images.jsonl"
    assert cli("export", "--db", str(root.db), "-o", str(dump)).rc == 0
    fresh = tmp_path / "fresh.db"
    dry = cli("import", "--db", str(fresh), "-i", str(dump), "--dry-run", "--verbose")
    assert dry.rc == 0 and not fresh.exists()
    assert "would add image default/docker.io/library/beta:2" in dry.stdout
    out = cli("import", "--db", str(fresh), "-i", str(dump))
    assert out.rc == 0, out.stderr
    for ns in (b"default", b"other"):
        for sub in (b"images", b"labels"):
            assert _subtree_entries(fresh, b"v1", ns, sub) == _subtree_entries(root.db, b"v1", ns, sub)
    assert _subtree_entries(fresh, b"v1")[0][:3] == (tuple(), b"default", None)
    with bolt.open(fresh, read_only=True) as db, db.begin() as tx:
        assert tx.bucket(b"v1").get(b"version") == b"\x06"
    # a second import changes nothing and takes no backup
    again = cli("import", "--db", str(fresh), "-i", str(dump))
    assert again.rc == 0 and again.stdout == ""
    assert sorted(os.listdir(tmp_path)) == ["fresh.db", "images.jsonl", "root"]


def test_import_conflicts(cli, root, tmp_path):
    dump = tmp_path / "images.jsonl"
    assert cli("export", "--db", str(root.db), "-n", "default", "docker.io/library/beta:2", "-o", str(dump)).rc == 0
    assert cli("label", "--db", str(root.db), "--no-backup", "docker.io/library/beta:2", "tier=").rc == 0
    fail = cli("import", "--db", str(root.db), "-i", str(dump), "--no-backup")
    assert fail.rc == 1 and "already exist" in fail.stderr
    dry = cli("import", "--db", str(root.db), "-i", str(dump), "--on-conflict", "overwrite", "--dry-run",
              "--verbose")
    assert "would overwrite image default/docker.io/library/beta:2" in dry.stdout
    assert cli("import", "--db", str(root.db), "-i", str(dump), "--on-conflict", "overwrite",
               "--no-backup").rc == 0
    [doc] = json.loads(cli("inspect", "--db", str(root.db), "-n", "default", "docker.io/library/beta:2").stdout)
    assert doc["labels"] == {"team": "storage", "tier": "gold"}


def test_tag_label_rm_seen_by_containerd(cli, root, start_containerd):
    db = str(root.db)
    assert cli("tag", "--db", db, "docker.io/library/beta:2", "example.com/beta:copy").rc == 0
    assert cli("label", "--db", db, "example.com/beta:copy", "stage=prod", "tier=").rc == 0
    assert cli("rm", "--db", db, "example.com/team/gamma:latest").rc == 0
    backups = [n for n in os.listdir(root.db.parent) if n.startswith("meta.db.bak-")]
    assert len(backups) == 3
    daemon = start_containerd(root)
    rows = {r[0]: r for r in _ctr_rows(daemon, "default", "ls")}
    assert "example.com/team/gamma:latest" not in rows
    assert sorted(rows["example.com/beta:copy"][-1].split(",")) == ["stage=prod", "team=storage"]
    assert rows["example.com/beta:copy"][2] == rows["docker.io/library/beta:2"][2]
    checked = {r[0]: r[3] for r in _ctr_rows(daemon, "default", "check")}
    assert checked["example.com/beta:copy"] == "complete"


def test_compact_passes_bbolt_check_and_keeps_content(cli, root, oracle, tmp_path):
    out_path = tmp_path / "compact.db"
    out = cli("compact", "--db", str(root.db), "-o", str(out_path))
    assert out.rc == 0, out.stderr
    assert oracle.check(out_path) == []
    assert oracle.dump(out_path) == oracle.dump(root.db)
    before = oracle.dump(root.db)
    inplace = cli("compact", "--db", str(root.db), "--in-place")
    assert inplace.rc == 0, inplace.stderr
    assert oracle.check(root.db) == [] and oracle.dump(root.db) == before
    backups = [n for n in os.listdir(root.db.parent) if n.startswith("meta.db.bak-")]
    assert len(backups) == 1 and oracle.dump(root.db.parent / backups[0]) == before


WRITERS = [
    ["rm", "docker.io/library/alpha:1"],
    ["tag", "docker.io/library/alpha:1", "x:1"],
    ["label", "docker.io/library/alpha:1", "k=v"],
    ["import", "-i", "/dev/null"],
    ["copy", "--to-namespace", "k8s.io", "--all"],
    ["compact", "--in-place"],
]
READERS = [["ls"], ["inspect", "docker.io/library/alpha:1"], ["check"], ["export"]]


def test_every_command_refuses_a_file_containerd_holds(cli, root, start_containerd, tmp_path):
    start_containerd(root)
    # containerd runs a GC shortly after start-up, which writes the file: wait until it is done
    settled(lambda: file_sha256(root.db), interval=2.0, timeout=30.0)
    listing = sorted(os.listdir(root.db.parent))
    for command in WRITERS + READERS + [["salvage", "-o", str(tmp_path / "out.db")]]:
        before = file_sha256(root.db)
        out = cli(command[0], "--db", str(root.db), *command[1:])
        assert out.rc == 3, (command, out.stderr)
        # the holder is named from /proc/locks: containerd, with its pid
        assert "locked by containerd (pid " in out.stderr and "stop containerd first" in out.stderr, out.stderr
        assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr
        assert file_sha256(root.db) == before, command
        assert sorted(os.listdir(root.db.parent)) == listing, command
    assert not (tmp_path / "out.db").exists()


def test_copy_synthesises_blob_records_with_gc_labels(cli, root, tmp_path, start_containerd):
    """A source namespace without content records (records imported from JSON): copy walks the
    content store, writes blob records with containerd's GC labels, and GC keeps the layers."""
    dump = tmp_path / "default.jsonl"
    assert cli("export", "--db", str(root.db), "-n", "default", "-o", str(dump)).rc == 0
    assert cli("import", "--db", str(root.db), "-n", "bare", "-i", str(dump), "--no-backup",
               "--records-only").rc == 0
    out = cli("copy", "--db", str(root.db), "-n", "bare", "--to-namespace", "k8s.io", "--content-root",
              str(root.content), "--all", "--no-backup")
    assert out.rc == 0, out.stderr
    daemon = start_containerd(root)
    refs = sorted(ref for ns, ref, _ in IMAGES if ns == "default") + ["docker.io/library/alpha:latest"]
    ctr_on(daemon, "default", "images", "rm", "--sync", *refs)
    ctr_on(daemon, "bare", "images", "rm", "--sync", *refs)
    rows = _ctr_rows(daemon, "k8s.io", "check")
    assert sorted(r[0] for r in rows) == sorted(refs)
    assert all(r[3] == "complete" for r in rows), rows
    content = {r[0]: r[-1] for r in table_rows(ctr_on(daemon, "k8s.io", "content", "ls"))}
    assert len(content) == 9
    manifests = {r[2] for r in rows}
    for digest in manifests:
        labels = dict(kv.split("=", 1) for kv in content[digest].split(","))
        assert set(labels) == {"containerd.io/gc.ref.content.config", "containerd.io/gc.ref.content.l.0"}


def test_import_into_another_namespace_writes_content_records(cli, root, tmp_path, start_containerd):
    """Issue 13 item 5: `import -n OTHER` beside a content store writes the content records
    containerd needs (copy's code), so ctr reports the images complete, not unavailable."""
    dump = tmp_path / "default.jsonl"
    assert cli("export", "--db", str(root.db), "-n", "default", "-o", str(dump)).rc == 0
    out = cli("import", "--db", str(root.db), "-n", "moved", "-i", str(dump), "--no-backup")
    assert out.rc == 0, out.stderr
    assert "content record(s)" in out.stderr and "unavailable" not in out.stderr, out.stderr
    daemon = start_containerd(root)
    rows = _ctr_rows(daemon, "moved", "check")
    refs = sorted(ref for ns, ref, _ in IMAGES if ns == "default") + ["docker.io/library/alpha:latest"]
    assert sorted(r[0] for r in rows) == sorted(refs)
    assert all(r[3] == "complete" for r in rows), rows


def test_import_without_content_store_says_which_images_are_unavailable(cli, root, tmp_path, start_containerd):
    dump = tmp_path / "default.jsonl"
    assert cli("export", "--db", str(root.db), "-n", "default", "-o", str(dump)).rc == 0
    out = cli("import", "--db", str(root.db), "-n", "bare", "-i", str(dump), "--no-backup", "--records-only")
    assert out.rc == 0, out.stderr
    refs = sorted(ref for ns, ref, _ in IMAGES if ns == "default") + ["docker.io/library/alpha:latest"]
    assert f"warning: {len(refs)} imported image(s) have no content record" in out.stderr, out.stderr
    assert "'bare'" in out.stderr and "--content-root" in out.stderr
    daemon = start_containerd(root)
    assert sorted(r[0] for r in _ctr_rows(daemon, "bare", "ls")) == sorted(refs)
    # what the warning said: containerd has the names but not their content in that namespace
    with pytest.raises(AssertionError, match="content digest sha256:[0-9a-f]+: not found"):
        _ctr_rows(daemon, "bare", "check")


def test_copy_refuses_without_a_content_store(cli, root, tmp_path):
    """Outside a containerd root and with no --content-root, copy will not write records without
    their content records unless told --records-only; the file is untouched."""
    lone = tmp_path / "lone" / "meta.db"
    lone.parent.mkdir()
    lone.write_bytes(root.db.read_bytes())
    before = file_sha256(lone)
    out = cli("copy", "--db", str(lone), "--to-namespace", "k8s.io", "--all")
    assert out.rc == 2 and "--records-only" in out.stderr and "--content-root" in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    assert file_sha256(lone) == before
    out = cli("copy", "--db", str(lone), "--to-namespace", "k8s.io", "--all", "--records-only", "--no-backup")
    assert out.rc == 0 and "no content records (--records-only)" in out.stderr, out.stderr
    # inside a containerd root the store next to --db is found without being named
    out = cli("copy", "--db", str(root.db), "--to-namespace", "k8s.io", "--all", "--no-backup")
    assert out.rc == 0 and "content record(s)" in out.stderr, out.stderr
