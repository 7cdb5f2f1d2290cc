"""Differential test: the same random op streams applied by the engine and
by real bbolt 1.3.6 must give the same per-op results and the same logical
content, bbolt's Check must pass on every file the engine writes (the
streams carry periodic "check" ops), and each side must be able to continue
the other's file."""

from __future__ import annotations

import shutil

import pytest

from tests.oracle import (OpGenerator, apply_ops, dump_file, first_difference,
                          first_dump_difference)

pytestmark = pytest.mark.compat

# seed, page size, generator options, stream shape, NoFreelistSync
CASES = [
    (1, 4096, {}, {"txs": 25, "ops_per_tx": 60}, False),
    (2, 1024, {"deep": True}, {"txs": 12, "ops_per_tx": 40}, False),
    (3, 4096, {"big_values": True}, {"txs": 12, "ops_per_tx": 30}, False),
    (4, 16384, {"deep": True}, {"txs": 10, "ops_per_tx": 40}, False),
    (5, 8192, {}, {"txs": 30, "ops_per_tx": 30, "rollback_rate": 0.4}, False),
    (6, 4096, {"deep": True}, {"txs": 12, "ops_per_tx": 40}, True),
    (7, 1024, {}, {"txs": 40, "ops_per_tx": 25, "check_every": 2}, False),
    (8, 1024, {"big_values": True}, {"txs": 8, "ops_per_tx": 30}, True),
]


def _ids(case):
    seed, page_size, gen, _shape, nfs = case
    return f"seed{seed}-{page_size}{''.join('-' + k for k in gen)}{'-nofreelistsync' if nfs else ''}"


def _same_content(oracle, label, *paths):
    reference = oracle.dump(paths[0])
    for path in paths:
        for who, dump in (("bbolt", oracle.dump(path)), ("engine", dump_file(path))):
            diff = first_dump_difference(dump, reference)
            assert diff is None, f"{label}: {who} reading {path.name} differs from bbolt's file: {diff}"


@pytest.mark.parametrize("case", CASES, ids=[_ids(c) for c in CASES])
def test_engine_matches_bbolt(oracle, tmp_path, case):
    seed, page_size, gen_options, shape, no_freelist_sync = case
    label = f"seed {seed} page size {page_size} {gen_options} nofreelistsync={no_freelist_sync}"
    gen = OpGenerator(seed, **gen_options)
    first = gen.stream(**shape)
    second = gen.stream(**shape)
    freelist = "no-sync" if no_freelist_sync else "persist"

    go_db, our_db = tmp_path / "bbolt.db", tmp_path / "engine.db"
    theirs = oracle.apply(go_db, first, page_size=page_size, no_freelist_sync=no_freelist_sync)
    ours = apply_ops(our_db, first, oracle, page_size=page_size, freelist=freelist)
    diff = first_difference(first, ours, theirs)
    assert diff is None, f"{label}, first stream: {diff}"
    _same_content(oracle, f"{label}, after first stream", go_db, our_db)

    # Each side continues the other's file; bbolt continuing its own file is the reference.
    go_on_ours, ours_on_go = tmp_path / "bbolt-on-engine.db", tmp_path / "engine-on-bbolt.db"
    shutil.copyfile(our_db, go_on_ours)
    shutil.copyfile(go_db, ours_on_go)
    reference = oracle.apply(go_db, second, no_freelist_sync=no_freelist_sync)
    crossed = oracle.apply(go_on_ours, second, no_freelist_sync=no_freelist_sync)
    diff = first_difference(second, crossed, reference)
    assert diff is None, f"{label}, bbolt continuing the engine's file: {diff}"
    continued = apply_ops(ours_on_go, second, oracle, freelist="keep")
    diff = first_difference(second, continued, reference)
    assert diff is None, f"{label}, engine continuing bbolt's file: {diff}"
    _same_content(oracle, f"{label}, after second stream", go_db, go_on_ours, ours_on_go)
    assert oracle.check(go_on_ours) == [], f"{label}: bbolt's writes on the engine's file fail Check"


@pytest.mark.slow
def test_engine_matches_bbolt_random_seeds(oracle, tmp_path):
    """More seeds and shapes than the fixed cases; count from BOLTIMAGES_SLOW_BUDGET,
    seed from BOLTIMAGES_DIFF_SEED to replay a failure."""
    import os
    import random

    from tests.helpers import slow_budget

    base = int(os.environ.get("BOLTIMAGES_DIFF_SEED", "0")) or random.randrange(1, 1 << 30)
    for i in range(slow_budget(3)):
        r = random.Random(base + i)
        case = (base + i, r.choice([1024, 2048, 4096, 8192, 16384]),
                {k: True for k in ("deep", "big_values") if r.random() < 0.3},
                {"txs": r.randint(5, 25), "ops_per_tx": r.randint(5, 60), "rollback_rate": r.random() * 0.4,
                 "check_every": r.randint(1, 6)},
                r.random() < 0.25)
        sub = tmp_path / f"case{i}"
        sub.mkdir()
        test_engine_matches_bbolt(oracle, sub, case)
