"""Child process of the corruption fuzz: fully exercises damaged files.

Reads one request per line on stdin; for each it prints "start" and then
"done <outcome>", where the outcome is "ok", "bolt <ExceptionClass>" for the
engine's own BoltError family (the expected way to refuse damage), or
"FAIL <type>: <message>" for anything else. A crash or hang shows up to the
parent as a missing "done" line. Requests:

    <path>                 full walk: open, iterate, check, write, reopen
    check <path>           read-only check: "ok <problems> <txid>"
    dump <path> <out>      canonical dump (tests/oracle) into file <out>
"""

from __future__ import annotations

import itertools

import os
import resource
import sys
import traceback

# Far above what any test file needs; a damaged length that makes the engine
# allocate gigabytes then fails as MemoryError instead of swapping the box.
ADDRESS_SPACE_LIMIT = 3 << 30

# A walk longer than this on files of a few MB can only be a loop.
MAX_ITEMS = 2_000_000


class RunawayIteration(Exception):
    pass


def _walk_bucket(bucket, budget: list[int], depth: int) -> None:
    if depth > 200:
        raise RunawayIteration("bucket nesting deeper than 200")
    for key, value in bucket.items():
        budget[0] -= 1
        if budget[0] < 0:
            raise RunawayIteration(f"more than {MAX_ITEMS} items")
        if value is None:
            child = bucket.bucket(key)
            if child is not None:
                child.sequence()
                child.stats()
                _walk_bucket(child, budget, depth + 1)
        else:
            bucket.get(key)
    # Backwards too: prev() runs a different code path through the pages.
    cursor = bucket.cursor()
    item = cursor.last()
    while item is not None:
        budget[0] -= 1
        if budget[0] < 0:
            raise RunawayIteration(f"more than {MAX_ITEMS} items")
        item = cursor.prev()


def _steps(path: str):
    from boltimages import bolt

    def read(db):
        with db.begin() as tx:
            _walk_bucket(tx.root, [MAX_ITEMS], 0)

    def check(db):
        with db.begin() as tx:
            tx.check()

    def write(db):
        with db.begin(write=True) as tx:
            bucket = tx.create_bucket_if_not_exists(b"fuzz-write")
            bucket.put(b"key", b"value" * 100)
            for name in tx.buckets()[:3]:
                target = tx.bucket(name)
                if target is not None:
                    target.put(b"fuzz-key", b"v" * 2000)
                    target.delete(b"fuzz-key")

    def paths(db):
        # bolt_db_walk_path: the lookups down a path and the walk in one call
        with db.begin() as tx:
            paths = []
            for name, value in itertools.islice(tx.root.items(), 3):
                if value is None:
                    paths.append((name,))
                    child = tx.bucket(name)
                    if child is not None:
                        paths += [(name, key) for key, v in itertools.islice(child.items(), 3) if v is None]
        for walk_path in paths:
            db.walk_path(walk_path, 64)
            db.walk_path(walk_path + (b"missing",), 1)

    def records(db):
        # image records cut as the engine walks the pages (pyext/records.c
        # cut_bucket) must be the ones cut from the walk's copy
        from boltimages import _records
        from boltimages.store.image_records import RawImage
        with db.begin() as tx:
            buckets = [tx.root]
            for name, value in itertools.islice(tx.root.items(), 3):
                child = tx.bucket(name) if value is None else None
                if child is not None:
                    buckets.append(child)
            for bucket in buckets:
                cut, _, walked = bucket.walk_native(lambda each, b: _records.cut_bucket(each, b, RawImage))
                copy = bucket.walk_bytes(2)
                fields = [slot for slot in RawImage.__slots__ if slot != "wire"]
                if walked != len(copy) or [[getattr(r, f) for f in fields] for r in cut] != \
                        [[getattr(r, f) for f in fields] for r in _records.parse(copy, 0, None, RawImage)]:
                    raise AssertionError("cut_bucket and parse of the copy disagree")

    return bolt, [read, check, paths, records, write]


def walk(path: str) -> str:
    """Every step runs even when an earlier one was refused; the first
    non-BoltError outcome wins, else the first BoltError, else ok."""
    bolt, steps = _steps(path)
    outcome = "ok"
    try:
        db = bolt.open(path, timeout=1.0)
    except bolt.BoltError as exc:
        return f"bolt {type(exc).__name__}"
    try:
        for step in steps:
            try:
                step(db)
            except bolt.BoltError as exc:
                if outcome == "ok":
                    outcome = f"bolt {type(exc).__name__}"
    finally:
        try:
            db.close()
        except bolt.BoltError:
            pass
    # The file as left behind must open again (or be refused cleanly).
    try:
        with bolt.open(path, read_only=True, timeout=1.0) as db2:
            with db2.begin() as tx:
                _walk_bucket(tx.root, [MAX_ITEMS], 0)
    except bolt.BoltError:
        pass
    return outcome


def check_only(path: str) -> str:
    from boltimages import bolt

    try:
        with bolt.open(path, read_only=True, timeout=1.0) as db:
            txid = db.info()["txid"]
            with db.begin() as tx:
                problems = tx.check()
    except bolt.BoltError as exc:
        return f"bolt {type(exc).__name__}"
    return f"ok {len(problems)} {txid}"


def dump_to(path: str, out: str) -> str:
    from boltimages import bolt
    from tests.oracle import dump_file

    try:
        lines = dump_file(path)
    except bolt.BoltError as exc:
        return f"bolt {type(exc).__name__}"
    with open(out, "w") as f:
        f.write("\n".join(lines))
    return "ok"


def _under_address_sanitizer() -> bool:
    return "libasan" in os.environ.get("LD_PRELOAD", "")


def main() -> int:
    # AddressSanitizer reserves terabytes of shadow address space, so an
    # RLIMIT_AS makes it abort at start-up; under ASan the same guard comes
    # from ASAN_OPTIONS=max_allocation_size_mb (set by .ci/run).
    if not _under_address_sanitizer():
        resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE_LIMIT, ADDRESS_SPACE_LIMIT))
    out = sys.stdout
    for line in sys.stdin:
        request = line.rstrip("\n")
        out.write("start\n")
        out.flush()
        try:
            if request.startswith("check "):
                outcome = check_only(request[len("check "):])
            elif request.startswith("dump "):
                outcome = dump_to(*request[len("dump "):].rsplit(" ", 1))
            else:
                outcome = walk(request)
        except BaseException as exc:  # noqa: BLE001 - every other type is the failure being hunted
            tb = traceback.format_exc().replace("\n", " | ")
            outcome = f"FAIL {type(exc).__name__}: {str(exc)[:300]} :: {tb[-1500:]}"
        out.write(f"done {outcome}\n")
        out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
