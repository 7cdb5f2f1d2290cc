"""Torn and missing writes of the last commit, simulated on copies.

For each commit N made by the engine, the pages it changed are found by
diffing the file before and after. A power cut can leave any subset of them
written, and the meta page of N unwritten or torn (the engine syncs data
before meta, so a written meta implies written data). Every such state must
open with commit N-1's content, pass bbolt's Check, and accept new commits.
"""

from __future__ import annotations

import os
import random

import pytest

from tests.helpers import slow_budget
from tests.oracle import current_meta, dump_file, first_dump_difference
from tests.oracle.crash_writer import churn_commit

pytestmark = [pytest.mark.compat, pytest.mark.slow]

PAGE = 4096  # bbolt can only fall back to meta 1 when meta 0's page size is the OS one


def _pages(data: bytes, count: int) -> list[bytes]:
    data = data.ljust(count * PAGE, b"\0")
    return [data[i * PAGE:(i + 1) * PAGE] for i in range(count)]


def _variant(before: bytes, after: bytes, meta_slot: int, rng: random.Random) -> tuple[bytes, str]:
    """A crash state between `before` and `after`; returns it and a description."""
    count = max(len(before), len(after)) // PAGE
    old, new = _pages(before, count), _pages(after, count)
    changed = [i for i in range(count) if old[i] != new[i] and i != meta_slot]
    out = list(new)
    kept_data = []
    for i in changed:
        fate = rng.choice(["new", "old", "zero", "half"])
        if fate == "old":
            out[i] = old[i]
        elif fate == "zero":
            out[i] = bytes(PAGE)
        elif fate == "half":
            cut = rng.randrange(1, PAGE // 512) * 512
            out[i] = new[i][:cut] + old[i][cut:]
        kept_data.append(fate)
    meta_fate = rng.choice(["old", "zero", "torn", "garbage"])
    if meta_fate == "old":
        out[meta_slot] = old[meta_slot]
    elif meta_fate == "zero":
        out[meta_slot] = bytes(PAGE)
    elif meta_fate == "torn":
        cut = rng.randrange(20, 72)  # inside the checksummed fields
        out[meta_slot] = new[meta_slot][:cut] + old[meta_slot][cut:]
    else:
        out[meta_slot] = new[meta_slot][:16] + rng.randbytes(PAGE - 16)
    data = b"".join(out)
    length = len(after)
    if len(after) > len(before) and rng.random() < 0.5:
        length = rng.randrange(len(before), len(after) + 1, PAGE)  # the grow never reached disk
    return data[:length], f"meta {meta_fate}, data pages {dict(zip(changed, kept_data))}, length {length}"


def test_torn_last_commit_falls_back(oracle, tmp_path):
    from boltimages import bolt

    seed = int(os.environ.get("BOLTIMAGES_CRASH_SEED", "0")) or random.randrange(1, 1 << 30)
    rng = random.Random(seed)
    commits = slow_budget(12)
    path = tmp_path / "torn.db"
    db = bolt.open(path, page_size=PAGE, no_sync=False)
    try:
        churn_commit(db, seed, 1)
        for n in range(2, commits + 2):
            before = path.read_bytes()
            expected = oracle.dump_bytes(before, tmp_path / "expected.db")
            prev_txid = current_meta(path).txid
            churn_commit(db, seed, n)
            after = path.read_bytes()
            meta = current_meta(path)
            assert meta.txid == prev_txid + 1
            for v in range(3):
                state, what = _variant(before, after, meta.txid % 2, rng)
                label = f"seed {seed} (BOLTIMAGES_CRASH_SEED), commit {n}, variant {v}: {what}"
                crash = tmp_path / "crash.db"
                crash.write_bytes(state)
                assert current_meta(crash).txid == prev_txid, label
                assert oracle.check(crash) == [], f"{label}: bbolt Check"
                assert oracle.dump(crash) == expected, f"{label}: bbolt reads other content"
                with bolt.open(crash, read_only=True) as ro:
                    assert ro.info()["txid"] == prev_txid, label
                diff = first_dump_difference(dump_file(crash), expected)
                assert diff is None, f"{label}: engine reads {diff}"
                assert bolt.check_file(crash) == [], f"{label}: engine check"
                # Writing on from the fallback commit must not reuse its live pages.
                with bolt.open(crash) as rw:
                    churn_commit(rw, seed + 1, n)
                    churn_commit(rw, seed + 2, n)
                assert oracle.check(crash) == [], f"{label}: bbolt Check after the engine wrote on"
                assert dump_file(crash) == oracle.dump(crash), label
    finally:
        db.close()
