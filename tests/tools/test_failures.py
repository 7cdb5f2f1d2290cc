"""Failure hygiene of the offline tools: kills, full disks, permissions, closed pipes, locks.

Every case checks what a user sees (one line on stderr, the README's exit
code, no Python exception text) and what is left on disk (no stray or partial
file, the original unchanged and valid for real bbolt).

Kills are deterministic: the command stops itself at a named point
(BOLTIMAGES_STOP_AT, see tools/common.stop_point) and the test SIGKILLs it
there. Full disks are real: a small tmpfs mounted (as root) under the test's
temp dir and unmounted after.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pathlib
import signal
import subprocess
import sys
from typing import Iterator

import pytest

from boltimages import bolt
from tests.helpers import child_env, require_root, require_tool
from tests.tools.conftest import file_sha256, write_jsonl

IMAGE_TYPE = "application/vnd.oci.image.manifest.v1+json"
ERROR_MARKERS = ("Traceback", "Errno", "Error:", "Exception", "b'")


def _image(i: int, label_bytes: int = 0) -> dict:
    return {"kind": "image", "namespace": "default", "name": f"example.com/app-{i:06d}:v1",
            "target": {"mediaType": IMAGE_TYPE, "digest": "sha256:" + hashlib.sha256(b"%d" % i).hexdigest(),
                       "size": 1000 + i, "annotations": {}},
            "labels": {"pad": "x" * label_bytes} if label_bytes else {},
            "createdAt": "2024-01-01T00:00:00.000000001Z", "updatedAt": "2024-01-01T00:00:00.000000001Z"}


def _jsonl(path: pathlib.Path, count: int, start: int = 0, label_bytes: int = 0) -> pathlib.Path:
    lines = [{"kind": "boltimages-export", "version": 1, "dbVersion": 3}]
    lines += [_image(i, label_bytes) for i in range(start, start + count)]
    return write_jsonl(path, *lines)


def _one_clear_line(stderr: str) -> str:
    lines = [l for l in stderr.splitlines() if l.strip()]
    assert len(lines) == 1, stderr
    for marker in ERROR_MARKERS:
        assert marker not in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def db(cli, tmp_path) -> pathlib.Path:
    path = tmp_path / "data" / "meta.db"
    path.parent.mkdir()
    res = cli("import", "--db", str(path), "-i", str(_jsonl(tmp_path / "seed.jsonl", 300, label_bytes=200)))
    assert res.rc == 0, res.stderr
    return path


@contextlib.contextmanager
def small_tmpfs(where: pathlib.Path, size: str) -> Iterator[pathlib.Path]:
    require_root()
    require_tool("mount")
    where.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=True)


def _cli_proc(*args: str, env_extra: dict | None = None) -> subprocess.Popen:
    env = child_env()
    env.pop("BOLTIMAGES_DEBUG", None)
    env.update(env_extra or {})
    return subprocess.Popen([sys.executable, "-m", "boltimages.cli", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _kill_at(point: str, *args: str) -> tuple[int, list[str]]:
    """Run a command until it stops itself at ``point``; SIGKILL it there. Returns (pid, its open
    files at that moment)."""
    proc = _cli_proc(*args, env_extra={"BOLTIMAGES_STOP_AT": point})
    try:
        line = proc.stderr.readline()  # blocks until the command reaches the point (or ends)
        assert line.startswith(f"stop-point {point}"), (line, proc.stderr.read())
        fds = []
        for fd in os.listdir(f"/proc/{proc.pid}/fd"):
            with contextlib.suppress(OSError):
                fds.append(os.readlink(f"/proc/{proc.pid}/fd/{fd}"))
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(30) == -signal.SIGKILL
        return proc.pid, fds
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()


# ---- kills -------------------------------------------------------------------------------------

def test_killed_compact_leaves_no_stray_file(cli, db, oracle):
    """The compacted copy is a nameless inode while it is written: SIGKILL leaves nothing."""
    listing, before = sorted(os.listdir(db.parent)), file_sha256(db)
    for _ in range(3):
        _, fds = _kill_at("compact-written", "compact", "--db", str(db), "--in-place")
        # the full copy existed, unnamed, in the target directory (so the rename is atomic)
        assert any(f.startswith(str(db.parent) + "/#") and f.endswith("(deleted)") for f in fds), fds
        assert sorted(os.listdir(db.parent)) == listing
        assert file_sha256(db) == before
    assert oracle.check(db) == []
    # and the next run simply works
    res = cli("compact", "--db", str(db), "--in-place", "--no-backup")
    assert res.rc == 0, res.stderr
    assert sorted(os.listdir(db.parent)) == listing


def test_killed_salvage_leaves_no_stray_file(cli, db, tmp_path):
    """salvage writes its output as a nameless inode until it passed its check: SIGKILL there
    leaves no file in the output directory, and the input is only ever read."""
    out_dir = tmp_path / "rescue"
    out_dir.mkdir()
    before = file_sha256(db)
    _, fds = _kill_at("salvage-written", "salvage", "--db", str(db), "-o", str(out_dir / "rescued.db"))
    assert any(f.startswith(str(out_dir) + "/#") and f.endswith("(deleted)") for f in fds), fds
    assert os.listdir(out_dir) == []
    assert file_sha256(db) == before


def test_killed_backup_leaves_no_partial_backup(cli, db):
    """A write command killed while copying its backup leaves no PATH.bak-* that looks real."""
    listing, before = sorted(os.listdir(db.parent)), file_sha256(db)
    _kill_at("backup-copied", "tag", "--db", str(db), "example.com/app-000001:v1", "new:1")
    assert sorted(os.listdir(db.parent)) == listing
    assert file_sha256(db) == before


# ---- full disk ---------------------------------------------------------------------------------

def test_disk_full_import_gives_back_space_and_stays_valid(cli, tmp_path, oracle):
    with small_tmpfs(tmp_path / "small", "1m") as small:
        target = small / "meta.db"
        res = cli("import", "--db", str(target), "-i", str(_jsonl(tmp_path / "a.jsonl", 20)))
        assert res.rc == 0, res.stderr
        size_before, dump_before = target.stat().st_size, oracle.dump(target)
        res = cli("import", "--db", str(target), "--no-backup",
                  "-i", str(_jsonl(tmp_path / "big.jsonl", 3000, start=100, label_bytes=600)))
        line = _one_clear_line(res.stderr)
        assert res.rc == 1
        assert str(target) in line and "no space left on device" in line.lower() and "unchanged" in line, line
        assert "free some space" in line
        assert sorted(os.listdir(small)) == ["meta.db"]
        assert target.stat().st_size <= size_before  # what the failed commit grew into is given back
        assert oracle.check(target) == []
        assert oracle.dump(target) == dump_before


def test_disk_full_backup_and_new_file_leave_nothing(cli, tmp_path):
    with small_tmpfs(tmp_path / "small", "256k") as small:
        # a new file that cannot be completed is removed, not left half-made
        target = small / "meta.db"
        res = cli("import", "--db", str(target),
                  "-i", str(_jsonl(tmp_path / "big.jsonl", 2000, label_bytes=600)))
        assert res.rc == 1
        line = _one_clear_line(res.stderr)
        assert "no space left" in line.lower() and "nothing was written" in line, line
        assert os.listdir(small) == []


def test_disk_full_compact_output_leaves_nothing(cli, db, tmp_path):
    with small_tmpfs(tmp_path / "small", "64k") as small:
        res = cli("compact", "--db", str(db), "-o", str(small / "out.db"))
        assert res.rc == 1
        line = _one_clear_line(res.stderr)
        assert "compaction failed" in line and "unchanged" in line, line
        assert os.listdir(small) == []


# ---- permissions and wrong paths ---------------------------------------------------------------

def test_permission_denied_is_one_line(db):
    """As root without the capabilities that bypass file modes (what an unprivileged user is),
    a file nobody may read: one line that says what to do."""
    require_root()
    setpriv = require_tool("setpriv")
    os.chmod(db, 0)
    try:
        done = subprocess.run([setpriv, "--bounding-set=-dac_override,-dac_read_search", sys.executable, "-m",
                               "boltimages.cli", "ls", "--db", str(db)], env=child_env(), capture_output=True,
                              text=True, timeout=60)
    finally:
        os.chmod(db, 0o600)
    assert done.returncode == 1
    line = _one_clear_line(done.stderr)
    assert str(db) in line and "permission denied" in line and "run as root" in line, line


def test_immutable_file_is_one_line_and_untouched(cli, db):
    require_root()
    require_tool("chattr")
    if subprocess.run(["chattr", "+i", str(db)], capture_output=True).returncode != 0:
        pytest.skip("this filesystem does not support the immutable attribute")
    try:
        listing, before = sorted(os.listdir(db.parent)), file_sha256(db)
        for args in (["tag", "example.com/app-000001:v1", "x:1"], ["compact", "--in-place"]):
            res = cli(args[0], "--db", str(db), *args[1:])
            assert res.rc == 1, res.stderr
            line = _one_clear_line(res.stderr)
            assert str(db) in line and "operation not permitted" in line and "lsattr" in line, line
            assert sorted(os.listdir(db.parent)) == listing and file_sha256(db) == before
    finally:
        subprocess.run(["chattr", "-i", str(db)], check=True)


def test_read_only_filesystem(cli, db, tmp_path):
    with small_tmpfs(tmp_path / "ro", "16m") as ro:
        target = ro / "meta.db"
        target.write_bytes(db.read_bytes())
        subprocess.run(["mount", "-o", "remount,ro", str(ro)], check=True)
        res = cli("tag", "--db", str(target), "example.com/app-000001:v1", "x:1")
        assert res.rc == 1
        line = _one_clear_line(res.stderr)
        assert "read-only file system" in line, line
        res = cli("compact", "--db", str(target), "--in-place")
        assert res.rc == 1
        assert "cannot write here" in _one_clear_line(res.stderr)


@pytest.mark.parametrize("args, expected", [
    (["export", "-o", "{dir}"], "is a directory"),
    (["compact", "-o", "{dir}"], "is a directory"),
    (["export", "-o", "{dir}/missing/out.jsonl"], "does not exist; create it first"),
    (["import", "--db", "{dir}/missing/meta.db", "-i", "/dev/null"], "does not exist; create it first"),
    (["ls", "--db", "{dir}"], "is a directory"),
])
def test_wrong_paths_are_one_line(cli, db, tmp_path, args, expected):
    filled = [a.format(dir=tmp_path) for a in args]
    if "--db" not in filled:
        filled[1:1] = ["--db", str(db)]
    res = cli(*filled)
    assert res.rc == 1, res.stderr
    assert expected in _one_clear_line(res.stderr)


def test_not_a_bolt_file_does_not_suggest_salvage(cli, tmp_path):
    junk = tmp_path / "notes.txt"
    junk.write_bytes(b"hello, this is not a database\n" * 300)
    res = cli("ls", "--db", str(junk))
    line = _one_clear_line(res.stderr)
    assert res.rc == 1 and "not a bolt database" in line and "salvage" not in line, line
    assert line.count(str(junk)) == 1 and "cannot open: cannot open" not in line


# ---- closed stdout -----------------------------------------------------------------------------

def test_closed_stdout_keeps_the_real_exit_status(tmp_path):
    """`boltimages check --db damaged.db | head -1`: the reader is gone before we write; the
    status is still 4 (problems found), with no BrokenPipe text."""
    junk = tmp_path / "damaged.db"
    junk.write_bytes(os.urandom(64 << 10))
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader has gone away before the first write
    try:
        done = subprocess.run([sys.executable, "-m", "boltimages.cli", "check", "--db", str(junk)],
                              env=child_env(), stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=60)
    finally:
        os.close(write_end)
    assert done.returncode == 4, done.stderr
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr


# ---- who holds the lock ------------------------------------------------------------------------

def test_lock_held_by_boltimages_serve_is_named(cli, db, tmp_path):
    from tests.server.conftest import Served
    served = Served(tmp_path, [], socket=str(tmp_path / "s.sock"), db=str(db)).wait_ready()
    try:
        res = cli("ls", "--db", str(db))
        assert res.rc == 3
        line = _one_clear_line(res.stderr)
        assert f"locked by boltimages serve (pid {served.proc.pid})" in line, line
        assert "containerd" not in line
    finally:
        served.stop()


# ---- serve on a damaged file, failed commits ---------------------------------------------------

def _damaged_but_openable(path: pathlib.Path) -> None:
    """A file whose freelist lost its entries: every reader opens it, bbolt's check fails."""
    with bolt.open(str(path)) as raw:
        with raw.begin(write=True) as tx:
            junk = tx.create_bucket(b"junk")
            for i in range(100):
                junk.put(b"k%03d" % i, b"x" * 1000)
        with raw.begin(write=True) as tx:
            tx.delete_bucket(b"junk")
        for i in range(3):
            with raw.begin(write=True) as tx:
                tx.create_bucket_if_not_exists(b"v1").put(b"version", b"\x06")
        info = raw.info()
    data = bytearray(path.read_bytes())
    count_at = info["freelist_pgid"] * info["page_size"] + 10  # page header: id u64, flags u16, count u16
    data[count_at:count_at + 2] = b"\0\0"
    path.write_bytes(bytes(data))
    assert bolt.check_file(str(path))


def test_serve_warns_loudly_on_a_damaged_file(tmp_path):
    from tests.server.conftest import Served
    path = tmp_path / "meta.db"
    _damaged_but_openable(path)
    served = Served(tmp_path, ["--read-only"], socket=str(tmp_path / "s.sock"), db=str(path)).wait_ready()
    try:
        log = served.log_path.read_text()
    finally:
        served.stop()
    errors = [l for l in log.splitlines() if "level=error" in l and "structural check" in l]
    assert len(errors) == 1, log
    assert "boltimages check" in errors[0] and "unreachable unfreed" in errors[0]


def test_failed_commit_is_logged_at_error_level(tmp_path, caplog):
    import logging

    from boltimages.store.db import MetadataDB
    with small_tmpfs(tmp_path / "small", "128k") as small:
        db = MetadataDB(small / "meta.db")
        try:
            caplog.set_level(logging.ERROR, logger="boltimages.store")
            with pytest.raises(bolt.BoltError):
                for i in range(200):
                    db.update(lambda tx, i=i: tx.bucket(b"v1").put(b"k%d" % i, b"x" * 4000))
        finally:
            db.close()
    failed = [r for r in caplog.records if r.levelno == logging.ERROR and "commit failed" in r.getMessage()]
    assert len(failed) == 1
    assert "No space left on device" in failed[0].error  # the reason, in the record's fields



# ---- filesystems without O_TMPFILE -------------------------------------------------------------

def test_named_scratch_fallback_and_stale_cleanup(tmp_path, monkeypatch):
    """Where O_TMPFILE is refused, the scratch file is a hidden named file removed on close, and
    one left by a killed run (its pid gone) is removed by the next run in that directory."""
    import errno

    from boltimages.tools import scratch as scratch_mod
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    stale = tmp_path / f".boltimages-{dead}-old.tmp"
    stale.write_bytes(b"x" * 100)
    real_open = os.open

    def no_tmpfile(path, flags, *args):
        if flags & os.O_TMPFILE == os.O_TMPFILE:
            raise OSError(errno.EOPNOTSUPP, "Operation not supported", path)
        return real_open(path, flags, *args)

    monkeypatch.setattr(scratch_mod.os, "open", no_tmpfile)
    with scratch_mod.ScratchFile(str(tmp_path)) as s:
        assert s.named is not None and os.path.basename(s.named).startswith(f".boltimages-{os.getpid()}-")
        assert not stale.exists()  # the dead run's file is gone
        os.write(s.fd, b"done")
        s.publish(str(tmp_path / "final"))
    assert sorted(os.listdir(tmp_path)) == ["final"]
    assert (tmp_path / "final").read_bytes() == b"done"
    with scratch_mod.ScratchFile(str(tmp_path)) as s:
        os.write(s.fd, b"abandoned")
    assert sorted(os.listdir(tmp_path)) == ["final"]


def test_file_size_limit_fails_cleanly(db, tmp_path, oracle):
    """Under `ulimit -f` the kernel would kill the command mid-commit with SIGXFSZ; the command
    ignores it, sees EFBIG, and leaves the file as it was, cut back to its committed size."""
    import resource
    size_before, dump_before = db.stat().st_size, oracle.dump(db)
    limit = size_before + (64 << 10)

    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    src = _jsonl(tmp_path / "big.jsonl", 3000, start=1000, label_bytes=600)
    done = subprocess.run([sys.executable, "-m", "boltimages.cli", "import", "--db", str(db), "--no-backup",
                           "-i", str(src)], env=child_env(), capture_output=True, text=True, timeout=120,
                          preexec_fn=limited)
    assert done.returncode == 1, done.stderr
    line = _one_clear_line(done.stderr)
    assert str(db) in line and "file too large" in line.lower() and "ulimit -f" in line, line
    assert db.stat().st_size <= size_before
    assert oracle.check(db) == [] and oracle.dump(db) == dump_before
