"""The oracle's own sanity: before trusting it as the reference for the
engine, make sure it agrees with itself and with bbolt's Check."""

from __future__ import annotations

import pytest

from tests.oracle import OpGenerator, pattern_value, truncate_cursor_results, value_repr

pytestmark = pytest.mark.compat


def test_generated_files_pass_bbolt_check(oracle, tmp_path):
    for seed, page_size in ((1, 4096), (2, 1024)):
        path = tmp_path / f"gen-{seed}.db"
        oracle.gen(path, seed, page_size, txs=10, ops=100)
        assert oracle.check(path) == [], f"seed {seed}"
        dump = oracle.dump(path)
        assert any(line.startswith("B ") for line in dump), f"seed {seed}: no buckets generated"
        assert oracle.info(path)["page_size"] == page_size


def test_apply_is_deterministic_across_runs_and_page_sizes(oracle, tmp_path):
    ops = OpGenerator(11, deep=True).stream(txs=12, ops_per_tx=40)
    first = oracle.apply(tmp_path / "a.db", ops, page_size=1024)
    second = oracle.apply(tmp_path / "b.db", ops, page_size=4096)
    assert len(first) == len(ops)
    # Results do not depend on the page size, nor on the run.
    assert truncate_cursor_results(ops, first) == truncate_cursor_results(ops, second)
    assert oracle.dump(tmp_path / "a.db") == oracle.dump(tmp_path / "b.db")
    checks = [r for op, r in zip(ops, first) if op["op"] == "check"]
    assert checks and all(r == {"r": []} for r in checks), checks


def test_apply_reports_bbolt_errors(oracle, tmp_path):
    ops = [
        {"op": "create_bucket", "path": ["61"]},
        {"op": "create_bucket", "path": ["61"]},
        {"op": "put", "path": ["61"], "key": "6b", "value": "76"},
        {"op": "create_bucket", "path": ["61", "6b"]},
        {"op": "put", "path": ["61"], "key": "", "value": "76"},
        {"op": "delete_bucket", "path": ["62"]},
        {"op": "get", "path": ["61"], "key": "6b"},
        {"op": "put", "path": ["61"], "key": "78", "vlen": 100, "vseed": 3},
        {"op": "next_sequence", "path": ["61"]},
        {"op": "cursor", "path": ["61"], "moves": [["first"], ["next"], ["next"]]},
        {"op": "commit"},
    ]
    res = oracle.apply(tmp_path / "e.db", ops)
    assert res == [
        {"r": None}, {"e": "BucketExists"}, {"r": None}, {"e": "IncompatibleValue"},
        {"e": "KeyRequired"}, {"e": "BucketNotFound"}, {"r": "76"}, {"r": None}, {"r": 1},
        {"r": [["6b", "76"], ["78", value_repr(pattern_value(3, 100))], None]}, {"r": None},
    ]
    assert oracle.dump(tmp_path / "e.db") == [
        "B 61 1", "K 61 6b 76", f"K 61 78 {value_repr(pattern_value(3, 100))}"]
