"""Process memory settings for the long-running server.

glibc gives each thread that allocates its own malloc arena (up to eight per
core). The server's worker threads each touch large, short-lived buffers
(List responses, subtree walks, protobuf encodings), so every arena grows to
the biggest request it ever served and keeps that memory: measured with the
benchmark workload, ten worker arenas held about 150 MiB between them. With
two arenas the same workload peaks at about half the resident memory, and
the GIL already keeps Python threads from allocating at the same moment, so
there is little contention to lose.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging

log = logging.getLogger("boltimages.server")

#: glibc's mallopt parameter numbers (malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
#: arenas the server allows: the main one and one shared by all workers
SERVER_ARENAS = 2
#: Allocations below this come from the arenas, not from mmap (glibc's
#: largest allowed value on 64-bit). A List answer of 10,000 images is
#: 2.7 MB, and its trip out (one buffer framed, joined with its frame
#: headers, the unsent rest kept by the transport) allocates and frees
#: several such buffers; left to glibc's defaults each could be a fresh
#: mapping whose every page faults on first touch (about 2,000 minor faults
#: a List). Measured with the Go client listing 10,000 images from an
#: unchanged namespace, three alternating runs each: 16.2-22.5 ms a List
#: with the defaults, 11.8-13.2 ms with these two settings, against
#: 11.6-12.7 ms from a Go server that replays the same answer and does no
#: work. Resident memory after the benchmark workload did not grow (see
#: bench/results): freed buffers are reused rather than mapped again.
SERVER_MMAP_THRESHOLD = 32 << 20
#: Free memory at the top of an arena that glibc keeps instead of returning
#: it to the system: returned at once, the next List would fault it in again.
SERVER_TRIM_THRESHOLD = 128 << 20
#: the cyclic collector's youngest-generation threshold for the server
#: (CPython's default is 700 allocations)
SERVER_GC_THRESHOLD0 = 20_000


def tune_malloc(arenas: int = SERVER_ARENAS) -> bool:
    """Cap glibc's malloc arenas and keep large buffers in them (see
    SERVER_MMAP_THRESHOLD); call before worker threads start.

    Returns False (and changes nothing) on a C library without mallopt's
    arena limit, such as musl; the server works the same, with more memory
    and slower large answers.
    """
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    if mallopt(M_ARENA_MAX, arenas) != 1:
        log.debug("mallopt(M_ARENA_MAX) refused; malloc arenas left at the default")
        return False
    if mallopt(M_MMAP_THRESHOLD, SERVER_MMAP_THRESHOLD) != 1 or \
            mallopt(M_TRIM_THRESHOLD, SERVER_TRIM_THRESHOLD) != 1:
        log.debug("mallopt refused the mmap or trim threshold; left at the default")
    return True


def settle_collector(threshold0: int = SERVER_GC_THRESHOLD0) -> None:
    """After start-up: take what start-up made out of the cyclic collector's
    sight, and let the youngest generation grow larger between collections.

    Why: every request allocates a few hundred container objects that die by
    reference counting long before any collection; what a collection then
    traverses is what survived, plus, for the oldest generation, every module,
    protobuf descriptor and class loaded at start-up. gc.freeze() moves those
    to the permanent generation (they live as long as the process anyway), and
    a higher first threshold means fewer collections over the same survivors.
    Measured on an image update: the collector took ~6% of its CPU before.
    Cycles are still collected, just less often.
    """
    gc.collect()
    gc.freeze()
    _, threshold1, threshold2 = gc.get_threshold()
    gc.set_threshold(threshold0, threshold1, threshold2)
