"""Writer used by the crash tests: commits numbered transactions with the
boltimages engine (fsync on) and reports each commit on stdout, forever,
until it is killed.

    python -m tests.oracle.crash_writer DB SEED [PAGE_SIZE]

Transaction n puts key n (8 bytes big-endian) into bucket b"log" with the
value expected_value(seed, n), and churns other buckets (puts, deletes,
nested buckets, big values) so that commits allocate, free and reuse pages.
Numbering resumes after the highest key already in b"log". A line "n\\n" on
stdout means commit n returned successfully.
"""

from __future__ import annotations

import random
import sys

from tests.oracle import pattern_value

LOG = b"log"


def value_size(seed: int, n: int) -> int:
    r = random.Random(seed * 1_000_003 + n)
    x = r.random()
    if x < 0.1:
        return 0
    if x < 0.8:
        return r.randint(1, 300)
    if x < 0.97:
        return r.randint(300, 20000)
    return r.randint(100_000, 600_000)


def expected_value(seed: int, n: int) -> bytes:
    return pattern_value(seed * 1_000_003 + n, value_size(seed, n))


def log_key(n: int) -> bytes:
    return n.to_bytes(8, "big")


def churn_commit(db, seed: int, n: int) -> None:
    """One write transaction: the log entry for n plus random churn."""
    r = random.Random(seed * 7919 + n)
    with db.begin(write=True) as tx:
        tx.create_bucket_if_not_exists(LOG).put(log_key(n), expected_value(seed, n))
        churn = tx.create_bucket_if_not_exists(b"churn")
        for _ in range(r.randint(0, 40)):
            key = bytes([r.randrange(64)]) + r.randbytes(r.randint(0, 6))
            if r.random() < 0.6:
                churn.put(key, r.randbytes(r.choice((0, 10, 100, 1000, 5000))))
            else:
                churn.delete(key)
        if r.random() < 0.3:
            name = b"nest%d" % r.randrange(6)
            if churn.bucket(name) is not None and r.random() < 0.5:
                churn.delete_bucket(name)
            else:
                nested = churn.create_bucket_if_not_exists(name)
                for i in range(r.randint(1, 60)):
                    nested.put(b"%05d" % i, r.randbytes(r.randint(0, 200)))
        if r.random() < 0.05:
            churn.put(b"\xffbig", r.randbytes(r.randint(1 << 20, 2 << 20)))
        elif r.random() < 0.1:
            churn.delete(b"\xffbig")


def last_logged(db) -> int:
    with db.begin() as tx:
        log = tx.bucket(LOG)
        if log is None:
            return 0
        item = log.cursor().last()
        return 0 if item is None else int.from_bytes(item[0], "big")


def main(argv: list[str]) -> int:
    from boltimages import bolt

    path, seed = argv[0], int(argv[1])
    page_size = int(argv[2]) if len(argv) > 2 else 0
    db = bolt.open(path, page_size=page_size, no_sync=False)
    n = last_logged(db)
    out = sys.stdout
    while True:
        n += 1
        churn_commit(db, seed, n)
        out.write(f"{n}\n")
        out.flush()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
