"""Test helpers shared by every suite: locating the real reference programs.

Compatibility tests need real containerd and a Go toolchain with bbolt. On a
developer machine without them such tests skip; in CI (env
BOLTIMAGES_REQUIRE_COMPAT=1) a missing tool fails the test instead, so a green
CI run always means the comparison against the real programs happened.
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
import time
from typing import Callable, TypeVar

import pytest

T = TypeVar("T")

COMPAT_REQUIRED = os.environ.get("BOLTIMAGES_REQUIRE_COMPAT") == "1"


def slow_budget(default: int) -> int:
    """Iteration count for slow soak/fuzz/crash loops (env BOLTIMAGES_SLOW_BUDGET)."""
    value = os.environ.get("BOLTIMAGES_SLOW_BUDGET")
    return int(value) if value else default


def missing(reason: str) -> None:
    """Skip, or fail when compatibility tests are required."""
    if COMPAT_REQUIRED:
        pytest.fail(f"compatibility test required but {reason}", pytrace=False)
    pytest.skip(reason)


def require_tool(name: str) -> str:
    """Absolute path of program `name`, or skip/fail as described above."""
    path = shutil.which(name)
    if path is None:
        missing(f"{name!r} is not installed")
    return path  # type: ignore[return-value]


def require_path(path: str, what: str) -> str:
    if not os.path.exists(path):
        missing(f"{what} not found at {path}")
    return path


def require_root() -> None:
    if os.geteuid() != 0:
        missing("test needs root (it starts a private containerd)")


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def boltimages_site() -> str:
    """The directory holding the `boltimages` package this test process imports.

    Child processes must run that same copy: in the dev loop it is plugin/
    (with the extension built in place), in CI it is the installed package,
    and plugin/ of a fresh clone has neither the compiled engine nor the
    generated protos.
    """
    import boltimages

    return os.path.dirname(os.path.dirname(os.path.abspath(boltimages.__file__)))


def child_env(**extra: str) -> dict[str, str]:
    """os.environ for a child Python that imports our boltimages and tests/."""
    env = dict(os.environ)
    parts = [boltimages_site(), REPO, env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in parts if p)
    env.update(extra)
    return env


# --- bucket trees as nested dicts (values bytes, nested buckets dicts) ----------

def bucket_tree(bucket) -> dict:  # type: ignore[no-untyped-def]
    """A bucket's whole subtree as nested dicts, read through the public API."""
    return {key: bucket_tree(bucket.bucket(key)) if value is None else value for key, value in bucket.items()}


def write_tree(bucket, tree: dict) -> None:  # type: ignore[no-untyped-def]
    """Store nested dicts under ``bucket``: a dict makes a nested bucket."""
    for key, value in tree.items():
        if isinstance(value, dict):
            write_tree(bucket.create_bucket(key), value)
        else:
            bucket.put(key, value)


# --- waiting for what another thread or process does ----------------------------

def wait_until(predicate: "Callable[[], object]", timeout: float = 10.0, interval: float = 0.005) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds pass; whether it became true.

    The one way tests wait for something another thread or process does: a
    condition with a deadline, never a fixed sleep that hopes it happened.
    """
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True


def waiting_in(thread: "threading.Thread", function: str, line_text: str) -> bool:
    """Whether ``thread`` is on the line of ``function`` containing ``line_text``:
    for a C call that blocks (with the GIL released), proof that the thread has
    reached the call, which an Event set just before it cannot give."""
    import linecache
    frame = sys._current_frames().get(thread.ident or -1)
    if frame is None or frame.f_code.co_name != function:
        return False
    return line_text in linecache.getline(frame.f_code.co_filename, frame.f_lineno)


def settled(read: "Callable[[], T]", interval: float = 0.5, timeout: float = 20.0) -> "T":
    """``read()`` once it gives the same answer twice ``interval`` apart: for
    state a daemon changes by itself (containerd's collector runs when it
    chooses), where no event says it is done. Polling with a deadline, not a
    fixed wait that hopes it was long enough."""
    deadline = time.monotonic() + timeout
    answer = read()
    while True:
        time.sleep(interval)
        again = read()
        if again == answer:
            return again
        if time.monotonic() > deadline:
            raise AssertionError(f"answers still changing after {timeout}s: {answer!r} then {again!r}")
        answer = again
