"""The meta.db flock, as containerd and we share it.

containerd holds bbolt's exclusive flock on meta.db while it runs. Our server
must refuse such a file with a clear one-line error (never a traceback, never
a silent hang), and must take the same lock itself, so a containerd started on
a file we serve waits for us instead of writing underneath us.
"""

from __future__ import annotations

import os
import pathlib
import time

import pytest

from tests.compat.daemons import DaemonError, boltimages_daemon, containerd_daemon, containerd_meta_db
from tests.helpers import wait_until

pytestmark = pytest.mark.compat


def _has_open(pid: int, path: pathlib.Path) -> bool:
    """Whether process ``pid`` holds ``path`` open (its /proc fd links)."""
    fd_dir = pathlib.Path(f"/proc/{pid}/fd")
    target = str(path.resolve())
    try:
        links = list(fd_dir.iterdir())
    except OSError:
        return False
    for link in links:
        try:
            if os.readlink(link) == target:
                return True
        except OSError:
            continue
    return False


# Both tests run our real server even in self-test mode: they are about its lock.
def test_ours_refuses_a_file_containerd_holds(containerd_factory, tmp_path: pathlib.Path) -> None:
    real = containerd_factory()
    ours = boltimages_daemon(tmp_path / "ours", real.db_path)
    started = time.monotonic()
    with pytest.raises(DaemonError):
        ours.start(timeout=30)
    elapsed = time.monotonic() - started
    ours.stop()
    assert ours.proc.returncode not in (0, None)
    assert elapsed < 30, f"took {elapsed:.1f}s to give up"
    log = ours.log_path.read_text()
    assert "Traceback" not in log, log
    assert "locked" in log, log
    assert real.serving(), "containerd must be unaffected"


def test_containerd_waits_for_our_lock(release, tmp_path: pathlib.Path) -> None:
    root = tmp_path / "root"
    db = containerd_meta_db(root)
    db.parent.mkdir(parents=True)
    ours = boltimages_daemon(tmp_path / "ours", db).start()
    real = containerd_daemon(release.containerd, tmp_path / "containerd", root, release)
    real.launch()
    try:
        # containerd has opened meta.db: from here bbolt's open only retries the
        # flock, so "not serving" below means it is waiting for our lock, not
        # merely that it has not got that far yet
        assert wait_until(lambda: _has_open(real.proc.pid, db) or real.proc.poll() is not None, 30), \
            "containerd never opened meta.db\n" + real.log_tail()
        logs = lambda: real.log_tail() + "\n" + ours.log_tail()
        assert real.running, logs()
        assert ours.running, logs()
        assert not real.serving(), "containerd opened meta.db while our server held it\n" + logs()
        assert ours.stop() == 0, logs()
        try:
            real.wait_ready(timeout=30)   # our lock released: containerd proceeds on the same file
        except DaemonError as exc:
            pytest.fail(f"{exc}\n{ours.log_tail()}", pytrace=False)
    finally:
        real.stop()
        ours.stop()
