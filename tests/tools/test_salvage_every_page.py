"""`salvage` against damage to every page of real containerd files, one page at a time.

Files: the metadata file a real containerd 1.6.20 wrote (tools conftest) and
the same content rewritten in one transaction by our `compact`. Damage kinds:
each page zeroed, each page filled with random bytes, truncation at every page
boundary, both meta pages zeroed. For each case every record of the newest
commit that lies on an intact page must come back - in place, or in the
reported lost-and-found bucket when its place cannot be known - and nothing may
appear that neither commit of the file holds. A sample of the outputs must pass
real bbolt's check, and containerd must start on one whose root leaf was lost.
"""

from __future__ import annotations

import random
import time
from typing import Iterator

import pytest

from boltimages.tools import rawpages, salvage
from boltimages.tools.common import ToolError
from tests.helpers import slow_budget
from tests.tools.conftest import IMAGES, ctr_on
from tests.tools.salvage_helpers import (LOST_AND_FOUND, read_intact, records_by_page, run_starts, score,
                                         tree_records)

pytestmark = pytest.mark.compat

Case = tuple[str, int, bytes, set[int]]


def damage_cases(data: bytes, seed: int = 15) -> Iterator[Case]:
    """(kind, page, damaged bytes, first pages of the tree page runs the damage destroyed)."""
    raw = rawpages.RawFile(data)
    ps = raw.page_size
    hwm = raw.valid_metas()[0].pgid
    starts = run_starts(data)
    rng = random.Random(seed)
    for pgid in range(hwm):
        lost = {starts[pgid]} if pgid in starts else set()
        zeroed = bytearray(data)
        zeroed[pgid * ps:(pgid + 1) * ps] = bytes(ps)
        yield "zero", pgid, bytes(zeroed), lost
        noise = bytearray(data)
        noise[pgid * ps:(pgid + 1) * ps] = rng.randbytes(ps)
        yield "garbage", pgid, bytes(noise), lost
    for cut in range(2, hwm):
        yield "truncate", cut, data[:cut * ps], {s for p, s in starts.items() if p >= cut}
    both = bytearray(data)
    both[:2 * ps] = bytes(2 * ps)
    yield "both metas", 0, bytes(both), set()


def _either_commit(data: bytes) -> set:
    """Records of either commit the two metas name: what a salvage may legitimately hold."""
    raw = rawpages.RawFile(data)
    out = set(records_by_page(data))
    for meta in raw.valid_metas()[1:]:
        out |= tree_records(read_intact(data, meta.slot).root)
    return out


def sweep(data: bytes) -> dict[str, list[int]]:
    """Per damage kind: [records on intact pages, in place, in lost-and-found, cases]; asserts as it goes."""
    allowed = _either_commit(data)
    figures: dict[str, list[int]] = {}
    for kind, pgid, damaged, lost in damage_cases(data):
        try:
            result = salvage.recover(damaged)
        except ToolError as exc:
            pytest.fail(f"{kind} at page {pgid}: {exc}")
        got = score(data, lost, result["tree"])
        wrong = [r for r in got.wrong if r not in allowed]
        assert wrong == [], (kind, pgid, wrong[:3])
        figure = figures.setdefault(kind, [0, 0, 0, 0])
        figure[0] += got.intact
        figure[1] += got.placed
        figure[2] += got.in_lost_and_found
        figure[3] += 1
        assert got.missing == [], (kind, pgid, str(got), got.missing[:3])
        if got.in_lost_and_found:
            assert result["report"]["lost_and_found"], (kind, pgid)
    return figures


def _show(name: str, figures: dict[str, list[int]], seconds: float) -> str:
    parts = [f"{kind}: {placed + shelved}/{intact} ({shelved} in lost+found, {cases} cases)"
             for kind, (intact, placed, shelved, cases) in figures.items()]
    return f"{name} in {seconds:.1f} s: " + "; ".join(parts)


def test_every_page_of_a_containerd_file(session_root, capsys):
    data = session_root.db.read_bytes()
    start = time.monotonic()
    figures = sweep(data)
    with capsys.disabled():
        print("\n" + _show("containerd 1.6 file", figures, time.monotonic() - start))
    for intact, placed, shelved, _cases in figures.values():
        assert placed + shelved == intact


def test_every_page_of_a_one_transaction_file(session_root, cli, tmp_path, capsys):
    out = tmp_path / "compact.db"
    assert cli("compact", "--db", str(session_root.db), "-o", str(out)).rc == 0
    data = out.read_bytes()
    start = time.monotonic()
    figures = sweep(data)
    with capsys.disabled():
        print("\n" + _show("one-transaction file (compact)", figures, time.monotonic() - start))
    # such a file keeps its root and freelist on its last pages and the previous meta names an
    # empty tree: every page below a cut was written by the one commit, so nothing may be missing
    for intact, placed, shelved, _cases in figures.values():
        assert placed + shelved == intact


def test_salvaged_outputs_pass_bbolts_check(session_root, oracle, tmp_path):
    data = session_root.db.read_bytes()
    cases = list(damage_cases(data))
    picked = random.Random(7).sample(cases, min(len(cases), slow_budget(16)))
    for i, (kind, pgid, damaged, _lost) in enumerate(picked):
        result = salvage.recover(damaged)
        out = tmp_path / f"out-{i}.db"
        assert salvage.write_tree(str(out), result["tree"], result["report"]["page_size"]) == [], (kind, pgid)
        assert oracle.check(out) == [], (kind, pgid)


def test_lost_root_and_v1_pages_keep_every_image(cli, root, oracle, tmp_path, start_containerd):
    """The pages containerd's tree hangs from are lost; containerd starts on the output with every image."""
    data = bytearray(root.db.read_bytes())
    raw = rawpages.RawFile(bytes(data))
    walk = read_intact(bytes(data))
    meta = raw.valid_metas()[0]
    v1_page = walk.page_of[((b"v1",), b"version")]
    ps = raw.page_size
    for victim in (meta.root, v1_page):
        data[victim * ps:(victim + 1) * ps] = bytes(ps)
    root.db.write_bytes(bytes(data))
    out = tmp_path / "salvaged.db"
    res = cli("salvage", "--db", str(root.db), "-o", str(out))
    assert res.rc == 5 and "Traceback" not in res.stderr, res.stderr
    assert "put back" in res.stdout, res.stdout
    assert oracle.check(out) == []
    root.db.write_bytes(out.read_bytes())
    daemon = start_containerd(root)
    seen = set()
    for ns in ("default", "other"):
        for row in ctr_on(daemon, ns, "images", "ls", "-q").split():
            seen.add((ns, row))
    assert {(ns, ref) for ns, ref, _ in IMAGES} <= seen
