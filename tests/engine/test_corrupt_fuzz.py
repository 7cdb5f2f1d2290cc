"""Corruption fuzz: damaged bbolt files must be refused with a BoltError or
read, never crash, hang, run out of memory or leak another exception type.

Each mutant is walked in a child process (tests/oracle/corrupt_walker.py):
open, iterate every bucket both ways, check(), a committing write, reopen.
"""

from __future__ import annotations

import dataclasses
import os
import random
import select
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import child_env, slow_budget
from tests.oracle import OracleError
from tests.oracle.corrupt import mutate

pytestmark = [pytest.mark.compat, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 20.0  # seconds per mutant; generous for a loaded 2-core CI box


class Walker:
    """A long-lived child walking one file at a time, restarted after a crash."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None

    def _start(self) -> None:
        env = child_env()
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.oracle.corrupt_walker"], cwd=REPO, env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def _readline(self, deadline: float) -> bytes | None:
        assert self.proc is not None and self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        line = b""
        while not line.endswith(b"\n"):
            ready, _, _ = select.select([fd], [], [], deadline)
            if not ready:
                return None
            chunk = os.read(fd, 1)
            if not chunk:
                return b""
            line += chunk
        return line

    def walk(self, path: Path) -> str:
        return self.request(str(path))

    def request(self, line: str) -> str:
        """Outcome of one request line (see corrupt_walker)."""
        if self.proc is None or self.proc.poll() is not None:
            self._start()
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(f"{line}\n".encode())
        self.proc.stdin.flush()
        start = self._readline(TIMEOUT)
        done = self._readline(TIMEOUT) if start == b"start\n" else start
        if done is None:
            self.close()
            return f"FAIL hang: no answer within {TIMEOUT:.0f}s"
        if not done:
            err = self.proc.stderr.read().decode(errors="replace")[-1500:] if self.proc.stderr else ""
            rc = self.proc.wait()
            self.proc = None
            return f"FAIL crash: walker exited with {rc} ({_signal_name(rc)}); stderr: {err}"
        return done.decode().removeprefix("done ").strip()

    def close(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


def _signal_name(rc: int) -> str:
    import signal
    return signal.Signals(-rc).name if rc < 0 else "exit"


@pytest.fixture(scope="module")
def base_files(oracle, tmp_path_factory) -> list[Path]:
    """Real bbolt files to damage: nested and inline buckets, overflow
    values, long keys (branch overflow), several page sizes, NoFreelistSync."""
    d = tmp_path_factory.mktemp("corrupt-base")
    specs = [(4096, {}), (1024, {"txs": 8, "ops": 120}), (4096, {"no_freelist_sync": True, "txs": 10}),
             (16384, {"txs": 10}), (4096, {"big_values": True, "txs": 5, "ops": 40})]
    out = []
    for i, (page_size, opts) in enumerate(specs):
        path = d / f"base{i}.db"
        oracle.gen(path, 1000 + i, page_size, **{"txs": 10, "ops": 80, **opts})
        out.append(path)
    return out


def test_clean_base_files_walk_ok(base_files):
    walker = Walker()
    try:
        for path in base_files:
            scratch = path.with_suffix(".copy")
            scratch.write_bytes(path.read_bytes())
            assert walker.walk(scratch) == "ok", f"clean file {path.name} does not walk cleanly"
    finally:
        walker.close()


def test_mutants_never_crash(base_files, tmp_path):
    mutants = slow_budget(300)
    seed = int(os.environ.get("BOLTIMAGES_FUZZ_SEED", "0")) or random.randrange(1, 1 << 30)
    rng = random.Random(seed)
    originals = [p.read_bytes() for p in base_files]
    walker = Walker()
    failures: list[str] = []
    outcomes: dict[str, int] = {}
    try:
        for i in range(mutants):
            which = rng.randrange(len(originals))
            data, what = mutate(originals[which], rng)
            if rng.random() < 0.15:
                data, more = mutate(data, rng)
                what += f" + {more}"
            path = tmp_path / f"mutant-{i % 4}.db"
            path.write_bytes(data)
            outcome = walker.walk(path)
            outcomes[outcome.split(":")[0]] = outcomes.get(outcome.split(":")[0], 0) + 1
            if outcome.startswith("FAIL"):
                keep = tmp_path / f"failing-{i}.db"
                keep.write_bytes(data)
                failures.append(f"mutant {i} (base {base_files[which].name}, {what}): {outcome} [saved {keep}]")
                if len(failures) >= 10:
                    break
    finally:
        walker.close()
    print(f"fuzz seed {seed}: outcomes {outcomes}")
    assert not failures, (f"seed {seed} (BOLTIMAGES_FUZZ_SEED): {len(failures)} failing mutants; "
                          f"outcomes {outcomes}:\n" + "\n".join(failures))


def test_engine_check_agrees_with_bbolt_on_mutants(oracle, base_files, tmp_path):
    """Where real bbolt (in its own process) survives a mutant and reads it
    from the same meta page as the engine: whatever bbolt's Check flags, the
    engine's check must flag too; and when both call the file clean, both
    must read the same content."""
    mutants = slow_budget(150)
    # bbolt loops forever on some damage (cycles); it is not the engine under test.
    oracle = dataclasses.replace(oracle, timeout=10.0)
    seed = int(os.environ.get("BOLTIMAGES_FUZZ_SEED", "0")) or random.randrange(1, 1 << 30)
    rng = random.Random(seed)
    originals = [p.read_bytes() for p in base_files]
    walker = Walker()
    failures: list[str] = []
    compared = {"check": 0, "dump": 0}
    try:
        for i in range(mutants):
            which = rng.randrange(len(originals))
            data, what = mutate(originals[which], rng)
            path = tmp_path / "mutant.db"
            path.write_bytes(data)
            label = f"mutant {i} (base {base_files[which].name}, {what})"
            outcome = walker.request(f"check {path}")
            if outcome.startswith("FAIL"):
                failures.append(f"{label}: engine check: {outcome}")
                continue
            if not outcome.startswith("ok "):
                continue  # refused to open: nothing to compare
            _, ours, our_txid = outcome.split()
            try:
                theirs = oracle.check(path)
                their_txid = oracle.info(path)["txid"]
            except (OracleError, subprocess.TimeoutExpired):
                continue  # bbolt itself cannot cope with this file
            if their_txid != int(our_txid):
                continue  # the engine rejected a meta bbolt trusts (or the reverse)
            compared["check"] += 1
            if theirs and ours == "0":
                keep = tmp_path / f"missed-{i}.db"
                keep.write_bytes(data)
                failures.append(f"{label}: bbolt Check finds {theirs[:3]} but the engine's check is clean "
                                f"[saved {keep}]")
            elif not theirs and ours == "0":
                out = tmp_path / "engine-dump.txt"
                outcome = walker.request(f"dump {path} {out}")
                if outcome != "ok":
                    failures.append(f"{label}: both checks clean but the engine cannot dump: {outcome}")
                    continue
                try:
                    want = oracle.dump(path)
                except (OracleError, subprocess.TimeoutExpired):
                    continue
                compared["dump"] += 1
                got = out.read_text().split("\n") if out.stat().st_size else []
                if got != want:
                    failures.append(f"{label}: both checks clean but content differs")
            if len(failures) >= 10:
                break
    finally:
        walker.close()
    print(f"fuzz seed {seed}: {mutants} mutants, compared {compared}")
    assert not failures, (f"seed {seed} (BOLTIMAGES_FUZZ_SEED), compared {compared}:\n" + "\n".join(failures))
    assert compared["check"] > 0, f"seed {seed}: no mutant was comparable"
