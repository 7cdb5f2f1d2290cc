"""The server caps glibc's malloc arenas (server/memory.py)."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from tests.helpers import child_env


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the arena limit is a glibc setting")
def test_arena_limit_is_accepted_and_keeps_threads_on_shared_arenas():
    # In a fresh interpreter: after the cap, threads that allocate big blocks
    # make no arenas of their own, so the count of 64 MiB-reserved arena
    # mappings stays at the cap (glibc reserves each thread arena that way).
    script = r"""
import threading
from boltimages.server.memory import limit_malloc_arenas
assert limit_malloc_arenas(2) is True
def work():
    blobs = [bytearray(200_000) for _ in range(50)]
    del blobs
threads = [threading.Thread(target=work) for _ in range(8)]
for t in threads: t.start()
for t in threads: t.join()
arenas = 0
for line in open("/proc/self/maps"):
    lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
    # a thread arena reserves 64 MiB: one mapping, or a used part plus a PROT_NONE rest
    if "---p" in line and (hi - lo) > (32 << 20):
        arenas += 1
print(arenas)
"""
    out = subprocess.run([sys.executable, "-c", script], env=child_env(), capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.strip()) <= 1, "worker threads got arenas of their own despite the cap"


def test_settle_collector_freezes_start_up_objects_and_still_collects_cycles():
    script = r"""
import gc, weakref
from boltimages.server.memory import settle_collector, SERVER_GC_THRESHOLD0
settle_collector()
assert gc.get_freeze_count() > 1000, gc.get_freeze_count()
assert gc.get_threshold()[0] == SERVER_GC_THRESHOLD0
class Node:
    pass
a, b = Node(), Node()
a.other, b.other = b, a
gone = weakref.ref(a)
del a, b
# the young generation counts containers that stay alive: keep enough of
# them to pass the threshold, and the collection that follows finds the cycle
keep = [[] for _ in range(SERVER_GC_THRESHOLD0 * 2)]
assert gone() is None, "a cycle made after start-up was never collected"
print("ok")
"""
    proc = subprocess.run([sys.executable, "-c", script], env=child_env(), capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr
