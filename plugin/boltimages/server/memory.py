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
import logging

log = logging.getLogger("boltimages.server")

#: glibc's mallopt parameter number for the arena limit (M_ARENA_MAX in malloc.h)
M_ARENA_MAX = -8
#: arenas the server allows: the main one and one shared by all workers
SERVER_ARENAS = 2


def limit_malloc_arenas(arenas: int = SERVER_ARENAS) -> bool:
    """Cap glibc's malloc arenas; call before worker threads start.

    Returns False (and changes nothing) on a C library without mallopt's
    arena limit, such as musl; the server works the same, with more memory.
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
    return True
