"""Walking and comparing whole bucket trees through the engine.

Used to prove that a rewritten file (compact, salvage) holds exactly the
logical content it should: every bucket, key, value and bucket sequence.
"""

from __future__ import annotations

from typing import Any, Iterator, Optional

# (bucket path, key, value or None for a bucket, sequence of that bucket or None)
Entry = tuple[tuple[bytes, ...], bytes, Optional[bytes], Optional[int]]


def entries(tx: Any) -> Iterator[Entry]:
    """Every entry of the file in a stable order (depth first, key order)."""
    yield from _walk(tx.root, ())


def _walk(bucket: Any, path: tuple[bytes, ...]) -> Iterator[Entry]:
    for key, value in bucket.items():
        if value is not None:
            yield path, key, value, None
            continue
        child = bucket.bucket(key)
        yield path, key, None, child.sequence()
        yield from _walk(child, path + (key,))


def first_difference(tx_a: Any, tx_b: Any) -> Optional[str]:
    """None when both files hold the same logical content, else where they first differ."""
    a_iter, b_iter = entries(tx_a), entries(tx_b)
    count = 0
    while True:
        a = next(a_iter, None)
        b = next(b_iter, None)
        if a is None and b is None:
            return None
        if a != b:
            where = a if a is not None else b
            assert where is not None
            path = "/".join(p.decode("utf-8", "backslashreplace") for p in where[0] + (where[1],))
            return f"after {count} equal entries, at {path!r}"
        count += 1


def count_entries(tx: Any) -> int:
    return sum(1 for _ in entries(tx))
