"""Who holds the flock on a metadata file: containerd, ``boltimages serve``, or someone else.

bbolt (and our engine) lock the whole file with flock(2). Linux lists every
flock in /proc/locks as ``N: FLOCK ADVISORY WRITE <pid> <maj>:<min>:<inode> 0 EOF``
(device numbers in hex, inode in decimal), so the holder's pid is found by
matching the file's device and inode, and its command line names the program.
The pid can be one we cannot see (another pid namespace shows 0 or a pid we
have no /proc entry for): then we say "another process" and name both usual
holders, never a guess.
"""

from __future__ import annotations

import fcntl
import os
from typing import Optional

PROC_LOCKS = "/proc/locks"


def is_locked(path: str) -> bool:
    """Whether someone holds the flock on ``path`` (a shared try-lock is refused).

    A file that cannot be opened counts as not locked; a flock that fails for
    another reason (a filesystem without locks) raises its OSError.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops a lock we may have taken
    return False


def holder_pids(path: str) -> list[int]:
    """Pids holding a flock on ``path`` (empty when unknown or none)."""
    try:
        st = os.stat(path)
        with open(PROC_LOCKS, encoding="ascii", errors="replace") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return []
    want = (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino)
    pids: list[int] = []
    for line in lines:
        fields = line.split()
        # a blocked waiter is listed as "N: -> FLOCK ...": it does not hold the lock
        if len(fields) < 6 or fields[1] != "FLOCK":
            continue
        try:
            pid = int(fields[4])
            maj, minor, ino = fields[5].split(":")
            if (int(maj, 16), int(minor, 16), int(ino)) == want and pid > 0 and pid not in pids:
                pids.append(pid)
        except ValueError:
            continue
    return pids


def _program(pid: int) -> Optional[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            argv = [a.decode("utf-8", "replace") for a in fh.read().split(b"\0") if a]
    except OSError:
        return None
    if not argv:
        return None
    base = os.path.basename(argv[0])
    # boltimages runs as `boltimages ...` or `python -m boltimages ...`
    words = [os.path.basename(a) for a in argv[:4]]
    if "boltimages" in words or base == "boltimages" or "boltimages.cli" in words:
        sub = next((a for a in argv[1:] if not a.startswith("-") and a not in ("boltimages", "boltimages.cli")),
                   "")
        return f"boltimages {sub}".strip()
    return base


def describe_holder(path: str) -> str:
    """One phrase for 'locked by ...', e.g. "containerd (pid 812)"."""
    pids = [p for p in holder_pids(path) if p != os.getpid()]
    named = [(pid, _program(pid)) for pid in pids]
    known = [f"{prog} (pid {pid})" for pid, prog in named if prog]
    if known:
        return ", ".join(known)
    return "another process (containerd, or a running 'boltimages serve')"


def locked_text(path: str) -> str:
    """The whole message for a locked file: who holds it and what to do."""
    who = describe_holder(path)
    if who.startswith("containerd"):
        advice = "stop containerd first, or work on a copy of the file"
    elif who.startswith("boltimages"):
        advice = "stop that boltimages first, or work on a copy of the file"
    else:
        advice = "stop it first, or work on a copy of the file"
    return f"{path}: locked by {who}; nothing was touched; {advice}"
