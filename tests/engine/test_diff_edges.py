"""Hand-written op streams at the edges of the format (size limits, inline
<-> page bucket transitions, root splits, cursor deletes, rollbacks),
applied by the engine and by real bbolt: results, content and bbolt's Check
must agree."""

from __future__ import annotations

import pytest

from tests.oracle import apply_ops, dump_file, first_difference, first_dump_difference

pytestmark = pytest.mark.compat


def h(b: bytes) -> str:
    return b.hex()


def put(path, key: bytes, value: bytes = b"", **gen):
    op = {"op": "put", "path": [h(p) for p in path], "key": h(key)}
    if gen:
        op.update(gen)
    else:
        op["value"] = h(value)
    return op


def mk(path, kind="create_bucket"):
    return {"op": kind, "path": [h(p) for p in path]}


def rm_bucket(path):
    return {"op": "delete_bucket", "path": [h(p) for p in path]}


def rm(path, key: bytes):
    return {"op": "delete", "path": [h(p) for p in path], "key": h(key)}


COMMIT, ROLLBACK, CHECK = {"op": "commit"}, {"op": "rollback"}, {"op": "check"}


def _limits(page_size):
    ops = [mk([b"lim"])]
    ops += [put([b"lim"], b"k" * 32768, b"max key"), put([b"lim"], b"k" * 32769, b"too long"),
            put([b"lim"], b"", b"no key"), put([b"lim"], b"empty", b"")]
    for n in (page_size - 64, page_size - 16, page_size, page_size + 1, 3 * page_size):
        ops.append(put([b"lim"], b"v%d" % n, vlen=n, vseed=n))
    ops += [COMMIT, CHECK, {"op": "get", "path": [h(b"lim")], "key": h(b"k" * 32768)},
            {"op": "get", "path": [h(b"lim")], "key": h(b"empty")}, ROLLBACK]
    return ops


def _inline_transitions(page_size):
    ops = [mk([b"p"]), mk([b"p", b"c"]), put([b"p", b"c"], b"a", b"1"), COMMIT, CHECK]
    # Grow the inline bucket past pagesize/4 so it gets its own page ...
    ops += [put([b"p", b"c"], b"%04d" % i, b"x" * 40) for i in range(page_size // 40)] + [COMMIT, CHECK]
    # ... then shrink it back until it is inline again.
    ops += [rm([b"p", b"c"], b"%04d" % i) for i in range(page_size // 40 - 2)] + [COMMIT, CHECK]
    # A nested bucket inside makes it non-inlineable whatever its size.
    ops += [mk([b"p", b"c", b"n"]), COMMIT, CHECK, rm_bucket([b"p", b"c", b"n"]), COMMIT, CHECK]
    # Empty it entirely, then delete and recreate in one tx.
    ops += [rm([b"p", b"c"], b"a"), rm([b"p", b"c"], b"%04d" % (page_size // 40 - 1)),
            rm([b"p", b"c"], b"%04d" % (page_size // 40 - 2)), COMMIT, CHECK]
    ops += [rm_bucket([b"p", b"c"]), mk([b"p", b"c"]), put([b"p", b"c"], b"again", b"!"), COMMIT, CHECK]
    return ops


def _root_split():
    ops = [mk([b"bucket-%05d" % i]) for i in range(1500)] + [COMMIT, CHECK]
    ops += [rm_bucket([b"bucket-%05d" % i]) for i in range(0, 1500, 2)] + [COMMIT, CHECK]
    ops += [rm_bucket([b"bucket-%05d" % i]) for i in range(1, 1500, 2)] + [COMMIT, CHECK]
    return ops


def _deep_then_drop():
    ops = [mk([b"deep"])]
    ops += [put([b"deep"], b"key-%06d" % i, b"v" * (i % 90)) for i in range(20000)] + [COMMIT, CHECK]
    ops += [mk([b"deep2"])] + [put([b"deep2"], b"%06d" % i, vlen=3000, vseed=i) for i in range(300)]
    ops += [COMMIT, CHECK, rm_bucket([b"deep"]), COMMIT, CHECK]
    # Delete all keys of deep2 from the middle outwards: merges and a collapsing root.
    order = sorted(range(300), key=lambda i: abs(i - 150))
    ops += [rm([b"deep2"], b"%06d" % i) for i in order] + [COMMIT, CHECK]
    return ops


def _cursor_deletes():
    ops = [mk([b"c"])] + [put([b"c"], b"%03d" % i, b"x" * 100) for i in range(300)] + [mk([b"c", b"zz"]), COMMIT]
    for i in range(0, 300, 3):
        ops.append({"op": "cursor", "path": [h(b"c")], "moves": [["seek", h(b"%03d" % i)], ["delete"]]})
    ops.append({"op": "cursor", "path": [h(b"c")], "moves": [["seek", h(b"zz")], ["delete"]]})
    ops.append({"op": "cursor", "path": [h(b"c")], "moves": [["last"], ["prev"], ["prev"], ["next"]]})
    ops += [COMMIT, CHECK]
    return ops


def _rollbacks():
    ops = [mk([b"r"]), put([b"r"], b"keep", b"1"), COMMIT]
    ops += [put([b"r"], b"gone", vlen=50000, vseed=1), mk([b"r", b"sub"]), rm_bucket([b"r"]), ROLLBACK, CHECK]
    ops += [{"op": "set_sequence", "path": [h(b"r")], "n": 2**63 + 5}, ROLLBACK]
    ops += [{"op": "next_sequence", "path": [h(b"r")]}, {"op": "set_sequence", "path": [h(b"r")], "n": 2**64 - 2},
            {"op": "next_sequence", "path": [h(b"r")]}, {"op": "sequence", "path": [h(b"r")]}, COMMIT, CHECK]
    return ops


STREAMS = {
    "limits": _limits,
    "inline-transitions": _inline_transitions,
    "root-split": lambda ps: _root_split(),
    "deep-then-drop": lambda ps: _deep_then_drop(),
    "cursor-deletes": lambda ps: _cursor_deletes(),
    "rollbacks": lambda ps: _rollbacks(),
}


@pytest.mark.parametrize("page_size", [1024, 4096])
@pytest.mark.parametrize("name", sorted(STREAMS))
def test_edge_stream(oracle, tmp_path, name, page_size):
    ops = STREAMS[name](page_size)
    go_db, our_db = tmp_path / "bbolt.db", tmp_path / "engine.db"
    theirs = oracle.apply(go_db, ops, page_size=page_size)
    ours = apply_ops(our_db, ops, oracle, page_size=page_size)
    diff = first_difference(ops, ours, theirs)
    assert diff is None, f"{name} at page size {page_size}: {diff}"
    want = oracle.dump(go_db)
    for who, dump in (("bbolt", oracle.dump(our_db)), ("engine", dump_file(our_db))):
        diff = first_dump_difference(dump, want)
        assert diff is None, f"{name} at page size {page_size}: {who} reading the engine's file: {diff}"
