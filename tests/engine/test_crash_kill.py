"""Crash safety: SIGKILL an engine writer at random moments; after every
kill the file must open, pass real bbolt's Check and the engine's check, and
hold every transaction whose commit had been reported."""

from __future__ import annotations

import os
import random
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import child_env, slow_budget
from tests.oracle.crash_writer import LOG, expected_value, log_key

pytestmark = [pytest.mark.compat, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]


def _start_writer(path: Path, seed: int, page_size: int) -> subprocess.Popen:
    env = child_env()
    return subprocess.Popen([sys.executable, "-m", "tests.oracle.crash_writer", str(path), str(seed),
                             str(page_size)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            cwd=REPO, env=env)


def _run_and_kill(proc: subprocess.Popen, rng: random.Random) -> tuple[int, bytes]:
    """Let the writer report a random number of commits, then kill it at a
    random moment; returns the last reported commit and its stderr."""
    want = rng.choice([0, 1, 2, 5, 10, 30])
    extra = rng.random() * 0.03
    reported = 0
    buf = b""
    deadline = time.monotonic() + 60
    fd = proc.stdout.fileno()
    kill_at = None
    while True:
        now = time.monotonic()
        if kill_at is not None and now >= kill_at:
            break
        if now > deadline:
            break
        wait = 0.05 if kill_at is None else max(0.0, kill_at - now)
        ready, _, _ = select.select([fd], [], [], wait)
        if ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                break  # writer exited on its own: an error, reported below
            buf += chunk
            *lines, buf = buf.split(b"\n")
            if lines:
                reported = int(lines[-1])
        if kill_at is None and reported >= want:
            kill_at = time.monotonic() + extra
    proc.send_signal(signal.SIGKILL)
    rest, err = proc.communicate()
    # Lines that reached the pipe before the kill were reported too.
    complete = (buf + rest).split(b"\n")[:-1]
    if complete:
        reported = int(complete[-1])
    return reported, err


def test_sigkill_during_commits(oracle, tmp_path):
    from boltimages import bolt

    trials = slow_budget(20)
    seed = int(os.environ.get("BOLTIMAGES_CRASH_SEED", "0")) or random.randrange(1, 1 << 30)
    rng = random.Random(seed)
    path = tmp_path / "crash.db"
    durable = 0  # commits known present before this trial's writer started
    for trial in range(trials):
        label = f"seed {seed} (BOLTIMAGES_CRASH_SEED), trial {trial}"
        proc = _start_writer(path, seed, 4096)
        reported, err = _run_and_kill(proc, rng)
        reported = max(reported, durable)
        assert proc.returncode == -signal.SIGKILL, (
            f"{label}: writer died on its own (rc {proc.returncode}): {err.decode(errors='replace')[-2000:]}")
        if not path.exists() or path.stat().st_size == 0:
            # killed before the file was created, or after creating it but before
            # its first pages were written (one write): nothing was committed, and
            # the next writer's read-write open initializes the empty file, as
            # bbolt's does (bbolt cannot open an empty file read-only at all)
            assert reported == 0, label
            continue
        assert oracle.check(path) == [], f"{label}: bbolt Check fails after kill"
        assert bolt.check_file(path) == [], f"{label}: engine check fails after kill"
        with bolt.open(path, read_only=True) as db, db.begin() as tx:
            log = tx.bucket(LOG)
            present = [] if log is None else [int.from_bytes(k, "big") for k in log.keys()]
            assert present == list(range(1, len(present) + 1)), f"{label}: log has gaps"
            assert len(present) >= reported, (
                f"{label}: commit {reported} was reported but only {len(present)} are present")
            assert len(present) <= reported + 1, f"{label}: more commits than the writer made"
            durable = len(present)
            for n in present[-3:]:
                assert log.get(log_key(n)) == expected_value(seed, n), f"{label}: log {n} damaged"
