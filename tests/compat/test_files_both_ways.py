"""meta.db files cross over: containerd's file served by us, our file opened by containerd.

Runs for each release (1.6.20, 1.7.24, 2.1.9): the release's own containerd and
ctr write the file (1.6/1.7: db version 3; 2.x: version 4, and 2.x migrates a
version-3 file at start), and the release's containerd opens what we wrote.

Exact equality here, timestamps included: both servers read the same bytes, so
List/Get must return the same records to the nanosecond. Buckets we do not own
(containers, snapshots, content, anything unknown) must come through our
server's writes byte-for-byte; the dump comes from the real-bbolt Go oracle.
Our offline tools (tag, label, rm, copy with content records, import) write a
release's file, and that release starts on it, lists the same images, reports
them complete in `ctr images check`, and its GC keeps copied content.
"""

from __future__ import annotations

import json
import pathlib
import re
import shutil
import tarfile

import pytest
from google.protobuf import json_format

from boltimages import bolt
from boltimages.tools import records
from boltimages.tools.rawpages import NO_FREELIST
from tests.compat import scenario
from tests.compat.conftest import _our_daemon, _start, _stop
from tests.compat.ctr_runner import Ctr, table_rows
from tests.compat.daemons import Daemon, containerd_daemon, containerd_meta_db
from tests.compat.grpc_client import Client
from tests.compat.oci_archive import build_image, build_index_image, write_archive
from tests.compat.releases import Release
from tests.tools.conftest import run_cli

pytestmark = pytest.mark.compat

NAMESPACES = ("default", "team-a", "labels-only")
# Subtrees of v1/<namespace>/ that our server writes; everything else is containerd's.
OWNED_SUBTREES = (b"images", b"leases", b"labels")


# 2.x's `ctr images import` goes through Transfer, which unpacks only for the platforms
# the transfer plugin's unpack_config lists; the CRI plugins fill that in, and they are
# disabled here ("no unpack platforms defined"). --local imports through the client
# (content writes + Images/Create + unpack), as 1.6/1.7 always do.
UNPACKING_IMPORT_FLAGS = {"1.6": (), "1.7": (), "2.1": ("--local",)}


def _populate_with_containerd(ctr: Ctr, tmp: pathlib.Path, release: Release) -> None:
    """Images (imported, unpacked, tagged, labelled), a container, leases, namespace labels."""
    first = write_archive(tmp / "first.tar", [build_image("docker.io/library/a:1", "a"),
                                              build_image("docker.io/library/b:2", "b")])
    second = write_archive(tmp / "second.tar", [build_image("example.com/team/c:3", "c"),
                                                build_index_image("example.com/team/multi:1", "m")])
    ctr("images", "import", *UNPACKING_IMPORT_FLAGS[release.minor], "--snapshotter", "native", str(first)).ok()
    ctr("images", "tag", "docker.io/library/a:1", "example.com/a:tagged").ok()
    ctr("images", "label", "docker.io/library/b:2", "owner=ops", "tier=base").ok()
    ctr("containers", "create", "--snapshotter", "native", "docker.io/library/a:1", "ctr1").ok()
    ctr("images", "import", "--no-unpack", "--all-platforms", str(second), namespace="team-a").ok()
    ctr("images", "tag", "example.com/team/c:3", "example.com/team/c:latest", namespace="team-a").ok()
    ctr("namespaces", "label", "team-a", "owner=team-a").ok()
    ctr("leases", "create", "--id", "keep-me", "why=test", namespace="team-a").ok()
    ctr("namespaces", "create", "labels-only", "purpose=compat").ok()


def _answers(client: Client, namespaces=NAMESPACES) -> dict:
    """Everything a client can read back, as exact dicts (timestamps included)."""
    def plain(message) -> dict:
        return json_format.MessageToDict(message, preserving_proto_field_name=True)

    out: dict = {}
    run = scenario.Run(client, "default")
    listed = run.ns_list()
    assert listed.ok, str(listed)
    all_ns = client.call(client.namespaces.List, client.namespaces_pb2.ListNamespacesRequest(), "default")
    assert all_ns.ok, str(all_ns)
    out["namespaces"] = sorted((n.name, sorted(n.labels.items())) for n in all_ns.response.namespaces)
    for ns in namespaces:
        images = run.list(ns=ns)
        assert images.ok, f"List in {ns}: {images}"
        out[f"{ns}/images"] = [plain(i) for i in images.response.images]
        for image in images.response.images:
            got = run.get(image.name, ns=ns)
            assert got.ok, f"Get {image.name} in {ns}: {got}"
            out[f"{ns}/get/{image.name}"] = plain(got.response.image)
        out[f"{ns}/filtered"] = [i.name for i in run.list("labels.owner==ops", "name~=tagged", ns=ns).response.images]
        if ns in ("default", "team-a"):
            # Non-empty: the refusal names what is left (images, blobs, containers, snapshots).
            refused = run.ns_delete(ns)
            out[f"{ns}/delete-refused"] = (refused.code.name, refused.details)
        leases = client.call(client.leases.List, client.leases_pb2.ListRequest(), ns)
        assert leases.ok, str(leases)
        out[f"{ns}/leases"] = sorted(json_format.MessageToJson(l, sort_keys=True) for l in leases.response.leases)
    return out


def _unowned(dump: list[str]) -> list[str]:
    """Oracle dump lines outside the subtrees our server owns (and outside the db version key)."""
    v1 = b"v1".hex()
    owned = {s.hex() for s in OWNED_SUBTREES}
    keep = []
    for line in dump:
        kind, path = line.split(" ", 2)[:2]
        parts = path.split("/")
        if parts[0] == v1 and len(parts) >= 3 and parts[2] in owned:
            continue
        if kind == "B" and parts[0] == v1 and len(parts) <= 2:
            continue   # the v1 and v1/<ns> buckets themselves (ours may add a namespace)
        if kind == "K" and parts == [v1] and line.split(" ")[2] == b"version".hex():
            continue
        keep.append(line)
    return keep


def _diff(a: dict, b: dict) -> str:
    lines = []
    for key in sorted(set(a) | set(b)):
        if a.get(key) != b.get(key):
            lines.append(f"{key}:\n  containerd: {a.get(key)}\n  boltimages: {b.get(key)}")
    return "\n".join(lines[:20])


def assert_clean_log(daemon: Daemon) -> None:
    """containerd started on a file we wrote and logged no warning, error or panic about it."""
    log = daemon.log_path.read_text(errors="replace")
    bad = [line for line in log.splitlines() if re.search(r"level=(warning|error|fatal|panic)", line)]
    assert not bad, "\n".join(bad[:10])


def file_facts(path: pathlib.Path) -> dict:
    """The db version under v1/version and whether a freelist page is written."""
    with bolt.open(path, read_only=True) as db:
        persisted = db.info()["freelist_pgid"] != NO_FREELIST
        with db.begin() as tx:
            version = records.db_version(tx)
    return {"db version": version, "freelist page": persisted}


@pytest.fixture
def containerd_file(containerd_factory, release: Release, tmp_path: pathlib.Path):
    """(root dir, answers) of a stopped containerd whose meta.db holds the populated state."""
    daemon: Daemon = containerd_factory()
    _populate_with_containerd(Ctr(release.ctr, daemon.address), tmp_path, release)
    client = Client(daemon.address)
    answers = _answers(client)
    client.close()
    answers.update(_ctr_views(Ctr(release.ctr, daemon.address)))
    assert daemon.stop() == 0, daemon.log_tail()
    root = daemon.db_path.parent.parent
    facts = file_facts(containerd_meta_db(root))
    assert facts == {"db version": release.db_version, "freelist page": release.writes_freelist}, facts
    return root, answers


_LOG_TIME = re.compile(r'time="[^"]*" ')


def _labels(cell: str) -> str:
    return ",".join(sorted(cell.split(","))) if "=" in cell else cell


def _ctr_views(ctr: Ctr) -> dict:
    """What `ctr images ls` / `images check` print per namespace (label maps sorted: Go map order)."""
    views = {}
    for ns in ("default", "team-a"):
        for command in (("images", "ls"), ("images", "check")):
            result = ctr(*command, namespace=ns)
            rows = [[_labels(cell) for cell in line.split()] for line in result.stdout.splitlines()]
            views[f"{ns}: ctr {' '.join(command)}"] = (result.rc, rows, _LOG_TIME.sub("", result.stderr))
    return views


def test_containerd_file_served_by_ours(containerd_file, boltimages_factory, ctr_bin, oracle, tmp_path) -> None:
    root, theirs = containerd_file
    multi = [row for row in theirs["team-a: ctr images ls"][1] if row[0] == "example.com/team/multi:1"]
    assert multi and "linux/amd64,linux/arm64" in multi[0], theirs["team-a: ctr images ls"]
    pristine = tmp_path / "pristine.db"
    shutil.copyfile(containerd_meta_db(root), pristine)
    served = tmp_path / "served" / "meta.db"
    served.parent.mkdir()
    shutil.copyfile(pristine, served)
    ours_daemon = boltimages_factory(served, root / "io.containerd.content.v1.content")
    client = Client(ours_daemon.address)
    ours = _answers(client)
    client.close()
    ours.update(_ctr_views(Ctr(ctr_bin, ours_daemon.address)))
    assert ours == theirs, _diff(theirs, ours)
    assert ours_daemon.stop() == 0, ours_daemon.log_tail()
    # Reads alone must leave the file logically unchanged.
    assert oracle.dump(ours_daemon.db_path) == oracle.dump(pristine)
    assert oracle.check(ours_daemon.db_path) == []


def _write_through_ours(client: Client) -> None:
    run = scenario.Run(client, "default")
    assert run.create(name="example.com/new:1", digest=scenario.D256, labels={"made-by": "boltimages"},
                      annotations={"org.opencontainers.image.ref.name": "1"}).ok
    assert run.update(paths=["labels.tier"], name="docker.io/library/b:2", labels={"tier": "top"}).ok
    assert run.delete("example.com/a:tagged").ok
    team = scenario.Run(client, "team-a")
    assert team.create(name="example.com/team/d:4", digest=scenario.D512, media_type=scenario.INDEX).ok
    assert team.lease_create("temp").ok and team.lease_delete("temp").ok
    assert team.ns_update("team-a", {"extra": "1"}, ["labels.extra"]).ok
    fresh = scenario.Run(client, "made-by-ours")
    assert fresh.create(name="example.com/fresh:1", digest=scenario.D256C, labels={"x": "y"}).ok


def test_ours_writes_then_containerd_reads(containerd_file, boltimages_factory, containerd_factory,
                                           ctr_bin, oracle, tmp_path) -> None:
    root, _ = containerd_file
    del _
    pristine = tmp_path / "pristine.db"
    shutil.copyfile(containerd_meta_db(root), pristine)
    served = tmp_path / "served" / "meta.db"
    served.parent.mkdir()
    shutil.copyfile(pristine, served)

    ours_daemon = boltimages_factory(served)
    client = Client(ours_daemon.address)
    _write_through_ours(client)
    namespaces = NAMESPACES + ("made-by-ours",)
    ours = _answers(client, namespaces)
    client.close()
    assert ours_daemon.stop() == 0, ours_daemon.log_tail()

    written = ours_daemon.db_path
    assert oracle.check(written) == []
    # The release's db version and freelist mode are kept (v4 from 2.x, NoFreelistSync from 1.7/2.x).
    assert file_facts(written) == file_facts(pristine)
    before, after = _unowned(oracle.dump(pristine)), _unowned(oracle.dump(written))
    for bucket in (b"containers", b"snapshots", b"content"):   # the comparison must cover real data
        assert any(f"/{bucket.hex()}" in line for line in before), f"no {bucket!r} records in the fixture"
    assert after == before, "buckets we do not own changed:\n" + "\n".join(
        sorted(set(before) ^ set(after))[:20])

    # Put our file under containerd's original root (its blobs and snapshots are there).
    shutil.copyfile(written, containerd_meta_db(root))
    real = containerd_factory(root)
    client = Client(real.address)
    theirs = _answers(client, namespaces)
    client.close()
    assert theirs == ours, _diff(theirs, ours)
    ctr = Ctr(ctr_bin, real.address)
    listed = ctr("images", "ls", "-q").ok().stdout.split()
    assert listed == ["docker.io/library/a:1", "docker.io/library/b:2", "example.com/new:1"]
    assert ctr("images", "ls", "-q", namespace="made-by-ours").ok().stdout.split() == ["example.com/fresh:1"]
    assert "ctr1" in ctr("containers", "ls", "-q").ok().stdout.split()
    assert "keep-me" in ctr("leases", "ls", "-q", namespace="team-a").ok().stdout.split()
    # The images whose blobs containerd has are still whole after our writes (ours made up
    # example.com/new:1's digest: check exits 1 on an image without blobs).
    checked = {r[0]: r[3] for r in table_rows(ctr("images", "check", "name~=^docker.io/").ok().stdout)}
    assert checked == {"docker.io/library/a:1": "complete", "docker.io/library/b:2": "complete"}, checked
    team_check = ctr("images", "check", "name~=team/c:", "name~=team/multi:", namespace="team-a").ok()
    checked = {r[0]: r[3] for r in table_rows(team_check.stdout)}
    assert set(checked) == {"example.com/team/c:3", "example.com/team/c:latest", "example.com/team/multi:1"}
    assert set(checked.values()) == {"complete"}, checked
    assert_clean_log(real)


def test_fresh_file_from_ours_opened_by_containerd(boltimages_factory, containerd_factory, ctr_bin, release,
                                                   oracle, tmp_path) -> None:
    db = tmp_path / "fresh" / "meta.db"
    db.parent.mkdir()
    ours_daemon = boltimages_factory(db)
    client = Client(ours_daemon.address)
    for ns in ("default", "second"):
        run = scenario.Run(client, ns)
        for step in ("create/alpine-3.18", "create/alpine-3.19", "create/app-v1", "create/sha512",
                     "update/mask-labels", "update/mask-target", "update/mask-annotations.key"):
            outcome = next(s for s in scenario.STEPS if s.id == step).run(run)
            assert outcome.ok, f"{ns} {step}: {outcome}"
    assert scenario.Run(client, "default").ns_update("second", {"k": "v"}, ["labels.k"]).ok
    # A bucket name over bbolt's 32 KiB key limit (allowed for buckets) must read back in containerd.
    assert scenario.Run(client, "long").create(name=scenario.LONG_NAME).ok
    ours = _answers(client, ("default", "second", "long"))
    client.close()
    assert ours_daemon.stop() == 0, ours_daemon.log_tail()
    assert oracle.check(ours_daemon.db_path) == []

    root = tmp_path / "containerd-root"
    meta = containerd_meta_db(root)
    meta.parent.mkdir(parents=True)
    shutil.copyfile(ours_daemon.db_path, meta)
    real = containerd_factory(root)
    client = Client(real.address)
    theirs = _answers(client, ("default", "second", "long"))
    client.close()
    assert theirs == ours, _diff(theirs, ours)
    ctr = Ctr(ctr_bin, real.address)
    for ns in ("default", "second"):
        assert ctr("images", "ls", "-q", namespace=ns).ok().stdout.split() == [
            "docker.io/library/alpine:3.18", "docker.io/library/alpine:3.19", "example.com/app:v1", "v:sha512"]
    assert ctr("images", "ls", "-q", namespace="long").ok().stdout.split() == [scenario.LONG_NAME]
    rows = [line.split() for line in ctr("namespaces", "ls").ok().stdout.splitlines()[1:]]
    assert ["second", "k=v"] in rows
    assert_clean_log(real)
    # Our fresh file is version 3; 2.x migrates it at start ("finished database migration
    # to v1.4"); we serve the migrated file with the same answers.
    assert file_facts(ours_daemon.db_path)["db version"] == 3
    assert real.stop() == 0, real.log_tail()
    assert file_facts(meta)["db version"] == release.db_version
    assert oracle.check(meta) == []
    migrated = boltimages_factory(meta)
    client = Client(migrated.address)
    again = _answers(client, ("default", "second", "long"))
    client.close()
    assert again == theirs, _diff(theirs, again)


def test_file_left_by_killed_containerd(containerd_factory, boltimages_factory, release: Release, tmp_path) -> None:
    """A node crash: containerd SIGKILLed mid-life; its meta.db is copied and served by us."""
    daemon: Daemon = containerd_factory()
    _populate_with_containerd(Ctr(release.ctr, daemon.address), tmp_path, release)
    client = Client(daemon.address)
    theirs = _answers(client)
    client.close()
    daemon.proc.kill()
    daemon.proc.wait(10)
    served = tmp_path / "after-kill" / "meta.db"
    served.parent.mkdir()
    shutil.copyfile(daemon.db_path, served)
    ours_daemon = boltimages_factory(served)
    client = Client(ours_daemon.address)
    ours = _answers(client)
    client.close()
    assert ours == theirs, _diff(theirs, ours)


def _tool(*args: str) -> str:
    out = run_cli(*args)
    assert out.rc == 0, f"boltimages {' '.join(args)}: rc {out.rc}\n{out.stderr}"
    return out.stdout


CHECKED_NAMESPACES = ("default", "team-a", "k8s.io")


def test_offline_tools_then_containerd(containerd_file, containerd_factory, release: Release, oracle,
                                       tmp_path) -> None:
    """tag, label, rm, export/import and copy (with content records) on the release's file;
    the release starts on it cleanly, lists what `boltimages ls` lists, calls every image
    complete, and its GC keeps the copied content once the source images are gone."""
    root, _ = containerd_file
    db, content = str(containerd_meta_db(root)), str(root / "io.containerd.content.v1.content")
    before = file_facts(containerd_meta_db(root))
    _tool("tag", "--db", db, "--no-backup", "docker.io/library/b:2", "example.com/b:copy")
    _tool("label", "--db", db, "--no-backup", "example.com/b:copy", "stage=prod", "owner=")
    _tool("rm", "--db", db, "--no-backup", "example.com/a:tagged")
    dump = tmp_path / "c.jsonl"
    _tool("export", "--db", db, "-n", "team-a", "-f", "name==example.com/team/c:3", "-o", str(dump))
    _tool("rm", "--db", db, "--no-backup", "-n", "team-a", "example.com/team/c:3")
    _tool("import", "--db", db, "--no-backup", "-i", str(dump))   # back where its content records are
    _tool("copy", "--db", db, "--no-backup", "-n", "team-a", "--to-namespace", "k8s.io",
          "--content-root", content, "--all")
    assert oracle.check(db) == []
    assert file_facts(containerd_meta_db(root)) == before
    ours = {ns: _tool("ls", "--db", db, "-n", ns, "-q").split() for ns in CHECKED_NAMESPACES}
    assert "example.com/b:copy" in ours["default"] and "example.com/a:tagged" not in ours["default"]
    assert ours["k8s.io"] == ours["team-a"] and "example.com/team/multi:1" in ours["k8s.io"]

    real = containerd_factory(root)
    ctr = Ctr(release.ctr, real.address)
    for ns in CHECKED_NAMESPACES:
        assert ctr("images", "ls", "-q", namespace=ns).ok().stdout.split() == ours[ns], ns
        rows = table_rows(ctr("images", "check", namespace=ns).ok().stdout)
        assert [r[0] for r in rows] == ours[ns] and all(r[3] == "complete" for r in rows), (ns, rows)
    labels = {r[0]: _labels(r[-1]) for r in table_rows(ctr("images", "ls").ok().stdout)}
    assert labels["example.com/b:copy"] == "stage=prod,tier=base"
    # GC: the copies' content records keep the blobs once the source namespace lets go.
    ctr("images", "rm", "--sync", *ours["team-a"], namespace="team-a").ok()
    assert ctr("images", "ls", "-q", namespace="team-a").ok().stdout.split() == []
    rows = table_rows(ctr("images", "check", namespace="k8s.io").ok().stdout)
    assert [r[0] for r in rows] == ours["k8s.io"] and all(r[3] == "complete" for r in rows), rows
    assert_clean_log(real)


# ---------------------------------------------------------------------------
# The release's own ctr on a populated file: against that release's containerd and
# against ours serving a copy of the same file (with containerd's content store).

CONTENT_DIR = "io.containerd.content.v1.content"
# `images export`: ctr 1.6 and 1.7 read content through the client (1.7's --local changes
# nothing); ctr 2.x goes through Streaming + Transfer unless --local (measured, CTR_CALLS.md).
EXPORT_LOCAL_FLAGS = {"1.6": (), "1.7": ("--local",), "2.1": ("--local",)}
EXPORT_USES_TRANSFER = {"1.6": False, "1.7": False, "2.1": True}


@pytest.fixture(scope="session")
def served_file(release: Release, tmp_path_factory):
    """(real ctr, our ctr, tmp dir): the release's containerd on its populated root, and ours
    on a copy of that root's meta.db with its content store."""
    tmp = tmp_path_factory.mktemp(f"served-{release.minor}")
    first = _start(containerd_daemon(release.containerd, tmp / "populate", None, release))
    _populate_with_containerd(Ctr(release.ctr, first.address), tmp, release)
    assert first.stop() == 0, first.log_tail()
    _stop(first)
    root = first.db_path.parent.parent
    # ours serves a copy of the whole root: snapshot kinds live in the snapshotter's own
    # file beside meta.db, which the running real containerd holds locked
    served_root = tmp / "served-root"
    shutil.copytree(root, served_root, symlinks=True)
    real = _start(containerd_daemon(release.containerd, tmp / "real", root, release))
    ours = _start(_our_daemon(tmp / "ours", containerd_meta_db(served_root), served_root / CONTENT_DIR))
    yield Ctr(release.ctr, real.address), Ctr(release.ctr, ours.address), tmp
    _stop(ours)
    _stop(real)


def _tar_members(path: pathlib.Path) -> dict:
    with tarfile.open(path) as tar:
        members = {m.name: tar.extractfile(m).read() if m.isfile() else m.type for m in tar.getmembers()}
    if "manifest.json" in members:
        # ctr builds Docker's manifest.json from a Go map: its entry order varies run to run.
        members["manifest.json"] = sorted(json.loads(members["manifest.json"]), key=lambda e: e["Config"])
    return members


def _export(ctr: Ctr, out: pathlib.Path, flags: tuple) -> tuple:
    result = ctr("images", "export", *flags, str(out), "docker.io/library/a:1", "docker.io/library/b:2")
    return result.rc, result.stderr, _tar_members(out) if result.rc == 0 else None


#: tries of a real containerd's export before its archive counts as broken
_REAL_EXPORT_TRIES = 3


def _export_real(ctr: Ctr, out: pathlib.Path, flags: tuple) -> tuple:
    """_export from a real containerd, the reference the test compares with.
    ctr 2.1.9's export through Transfer once exited 0 with a truncated archive
    in CI (tarfile: unexpected end of data); ours is not involved, so the
    reference export is tried again, a bounded number of times."""
    for attempt in range(_REAL_EXPORT_TRIES):
        try:
            return _export(ctr, out, flags)
        except tarfile.ReadError:
            if attempt == _REAL_EXPORT_TRIES - 1:
                raise
    raise AssertionError("unreachable")


def test_ctr_export_local_from_served_file(served_file, release: Release) -> None:
    real, ours, tmp = served_file
    flags = EXPORT_LOCAL_FLAGS[release.minor]
    theirs = _export_real(real, tmp / "real-local.tar", flags)
    assert theirs[0] == 0 and "index.json" in theirs[2], theirs[:2]
    mine = _export(ours, tmp / "ours-local.tar", flags)
    assert mine == theirs


def test_ctr_export_default_from_served_file(served_file, release: Release) -> None:
    """As typed: 1.6/1.7 read content (works through us); 2.x goes through Transfer, which
    streams an archive: a real containerd is needed, and we must say so."""
    real, ours, tmp = served_file
    theirs = _export_real(real, tmp / "real-default.tar", ())
    assert theirs[0] == 0 and "index.json" in theirs[2], theirs[:2]
    if not EXPORT_USES_TRANSFER[release.minor]:
        assert _export(ours, tmp / "ours-default.tar", ()) == theirs
        return
    rc, stderr, _ = _export(ours, tmp / "ours-default.tar", ())
    assert rc != 0 and "containerd" in stderr.lower() and "Method not found" not in stderr, stderr


def _same_ctr(real: Ctr, ours: Ctr, *args: str, namespace: str = "default") -> None:
    theirs, mine = real(*args, namespace=namespace), ours(*args, namespace=namespace)
    rows = lambda r: (r.rc, [[_labels(c) for c in line.split()] for line in r.stdout.splitlines()])
    assert theirs.rc == 0, theirs
    assert rows(mine) == rows(theirs), f"ctr {' '.join(args)}\ncontainerd:\n{theirs.stdout}\nboltimages:\n{mine}"


def test_ctr_leases_and_namespaces_from_served_file(served_file) -> None:
    real, ours, _ = served_file
    _same_ctr(real, ours, "leases", "ls", namespace="team-a")
    _same_ctr(real, ours, "namespaces", "ls")


def test_ctr_snapshots_ls_from_served_file(served_file) -> None:
    real, ours, _ = served_file
    theirs = real("snapshots", "--snapshotter", "native", "ls").ok().stdout
    assert "Active" in theirs and "Committed" in theirs, theirs   # the container's rootfs and the layers
    _same_ctr(real, ours, "snapshots", "--snapshotter", "native", "ls")


def test_ctr_containers_ls_from_served_file(served_file) -> None:
    real, ours, _ = served_file
    assert "ctr1" in real("containers", "ls", "-q").ok().stdout.split()
    _same_ctr(real, ours, "containers", "ls")
