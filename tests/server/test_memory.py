"""The server tunes glibc's malloc (server/memory.py): arenas capped, large buffers reused."""

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
from boltimages.server.memory import tune_malloc
assert tune_malloc(2) is True
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


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the thresholds are glibc settings")
@pytest.mark.parametrize("tuned", [False, True])
def test_large_buffers_are_reused_not_mapped_again(tuned: bool):
    # A worker that makes and drops List-sized buffers (3 MiB, joined as the
    # transport does) over and over: with glibc's defaults every round maps
    # fresh pages and faults each of them in; tuned, only the first does.
    script = r"""
import resource, sys, threading
if sys.argv[1] == "tuned":
    from boltimages.server.memory import tune_malloc
    assert tune_malloc(2) is True
counts = []
def work():
    b = bytes(3 << 20)
    del b
    before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
    for _ in range(20):
        b = bytes(3 << 20)
        joined = b"".join([b[:1 << 20], b[1 << 20:]])
        del b, joined
    counts.append(resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - before)
t = threading.Thread(target=work)
t.start()
t.join()
print(counts[0])
"""
    out = subprocess.run([sys.executable, "-c", script, "tuned" if tuned else "default"], env=child_env(),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    faults = int(out.stdout.strip())
    pages = 20 * (6 << 20) // 4096  # what faulting every page of every round would cost
    if tuned:
        assert faults < pages // 10, f"{faults} minor faults: large buffers were mapped afresh"
    else:
        # the case the tuning is for: if glibc stops doing this, the tuning can go
        assert faults > pages // 2, f"only {faults} minor faults with glibc's defaults"


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
