"""Salvage on randomly damaged bbolt files: it must never crash, and what it writes must pass bbolt's check.

Random damage (zeroed pages, flipped bytes anywhere including headers and
element arrays, truncation, pages copied over others) exercises every bounds
check of the raw reader. Iterations come from BOLTIMAGES_SLOW_BUDGET.
"""

from __future__ import annotations

import random

import pytest

from boltimages.tools import salvage
from boltimages.tools.common import ToolError
from tests.helpers import slow_budget
from tests.tools.salvage_helpers import dump_tree

pytestmark = [pytest.mark.compat, pytest.mark.slow]


def _damage(rng: random.Random, data: bytearray, ps: int) -> str:
    pages = len(data) // ps
    kind = rng.choice(["zero", "flip", "flips", "truncate", "copy", "header"])
    if kind == "zero":
        p = rng.randrange(pages)
        data[p * ps:(p + 1) * ps] = bytes(ps)
    elif kind == "flip":
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    elif kind == "flips":
        for _ in range(rng.randrange(2, 50)):
            data[rng.randrange(len(data))] = rng.randrange(256)
    elif kind == "truncate":
        del data[rng.randrange(2 * ps, len(data)):]
    elif kind == "copy":
        a, b = rng.randrange(2, pages), rng.randrange(2, pages)
        data[a * ps:(a + 1) * ps] = data[b * ps:(b + 1) * ps]
    else:
        p = rng.randrange(2, pages)
        off = p * ps + rng.randrange(32)  # page header and the first element
        data[off] = rng.randrange(256)
    return kind


def test_random_damage_never_crashes_and_output_passes_bbolt_check(oracle, tmp_path):
    rng = random.Random(20261126)
    budget = slow_budget(12)
    sources = []
    for seed, ps in ((21, 4096), (22, 1024)):
        path = tmp_path / f"src-{seed}.db"
        oracle.gen(path, seed=seed, page_size=ps, txs=15, ops=120)
        sources.append((path.read_bytes(), ps))
    for i in range(budget):
        original, ps = sources[i % len(sources)]
        data = bytearray(original)
        kinds = [_damage(rng, data, ps) for _ in range(rng.randrange(1, 4))]
        try:
            result = salvage.recover(bytes(data))
        except ToolError as exc:
            assert "meta" in str(exc), (kinds, exc)
            continue
        out = tmp_path / f"out-{i}.db"
        skipped = salvage.write_tree(str(out), result["tree"], result["report"]["page_size"])
        assert oracle.check(out) == [], kinds
        # what was written is what was recovered (unless the report lists items it could not write)
        if not skipped:
            written = set(oracle.dump(out))
            assert written == set(dump_tree(result["tree"])), kinds
