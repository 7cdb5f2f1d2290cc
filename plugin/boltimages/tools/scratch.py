"""New files that appear whole or not at all: compacted copies, backups.

A command killed half-way (SIGKILL, OOM, power loss) must leave no stray
file behind, and nothing that looks like a finished file. The scratch file is
therefore anonymous: ``open(dir, O_TMPFILE)`` makes an inode with no name in
the target's directory (same filesystem, so the final rename is atomic); the
engine opens it through ``/proc/self/fd/N``; only when it is complete and
verified is it given a name with ``linkat`` (then renamed over the target
when replacing). If the process dies first, the kernel frees the inode with
the last descriptor: nothing to clean, no matter how the process ended.

Why not "clean up on the next run": a named temp file survives until someone
runs the tool again in the same directory, holds the disk space meanwhile (a
full-size copy of meta.db on a node that may be short of space), and the next
run cannot tell a stale file from one a concurrent run is still writing
without a lock protocol of its own. O_TMPFILE has none of these problems.

Filesystems without O_TMPFILE (some FUSE and network filesystems answer
EOPNOTSUPP/EISDIR) get a named hidden file ``.boltimages-<pid>-*.tmp``,
removed on every exit Python sees; one left by a killed run is removed by
the next run in that directory once its pid is gone.
"""

from __future__ import annotations

import errno
import glob
import os
import re
import tempfile
from typing import Optional

NAMED_PREFIX = ".boltimages-"
_NAMED = re.compile(r"^\.boltimages-(\d+)-[^/]*\.tmp$")


class ScratchFile:
    """An unnamed file in ``directory``; ``path`` opens it, :meth:`publish` names it."""

    def __init__(self, directory: str) -> None:
        self.directory = directory or "."
        self.named: Optional[str] = None
        try:
            self.fd = os.open(self.directory, os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o600)
            self.path = f"/proc/self/fd/{self.fd}"
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
                raise
            remove_stale(self.directory)
            self.fd, self.named = tempfile.mkstemp(prefix=f"{NAMED_PREFIX}{os.getpid()}-", suffix=".tmp",
                                                   dir=self.directory)
            self.path = self.named

    def size(self) -> int:
        return os.fstat(self.fd).st_size

    def fsync(self) -> None:
        os.fsync(self.fd)

    def publish(self, name: str) -> None:
        """Give the finished file ``name``, which must not exist (FileExistsError otherwise)."""
        self.fsync()
        if self.named is None:
            _link_fd(self.fd, name)
        else:
            os.link(self.named, name)
            os.unlink(self.named)
            self.named = None
        fsync_dir(name)

    def replace(self, target: str) -> None:
        """Put the finished file in ``target``'s place atomically (rename over it)."""
        self.fsync()
        if self.named is None:
            # a name that is ours alone for the instant between link and rename
            staging = os.path.join(os.path.dirname(os.path.abspath(target)),
                                   f"{NAMED_PREFIX}{os.getpid()}-{os.path.basename(target)}.tmp")
            _link_fd(self.fd, staging)
            os.replace(staging, target)
        else:
            os.replace(self.named, target)
            self.named = None
        fsync_dir(target)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        if self.named is not None:
            try:
                os.unlink(self.named)
            except FileNotFoundError:
                pass
            self.named = None

    def __enter__(self) -> "ScratchFile":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_AT_FDCWD = -100
_AT_SYMLINK_FOLLOW = 0x400


def _link_fd(fd: int, name: str) -> None:
    """linkat(AT_FDCWD, "/proc/self/fd/N", AT_FDCWD, name, AT_SYMLINK_FOLLOW): name an unnamed inode.

    Python's os.link(follow_symlinks=True) calls link(2), which links the
    /proc symlink itself and fails with EXDEV; the follow flag is what makes
    the kernel take the inode behind it (allowed without privileges for an
    O_TMPFILE opened without O_EXCL).
    """
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    source = f"/proc/self/fd/{fd}".encode()
    if libc.linkat(_AT_FDCWD, source, _AT_FDCWD, os.fsencode(name), _AT_SYMLINK_FOLLOW) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), name)


def remove_stale(directory: str) -> list[str]:
    """Named scratch files of runs whose process is gone (only on filesystems without O_TMPFILE)."""
    removed = []
    for path in glob.glob(os.path.join(glob.escape(directory), NAMED_PREFIX + "*.tmp")):
        m = _NAMED.match(os.path.basename(path))
        if not m or _alive(int(m.group(1))):
            continue
        try:
            os.unlink(path)
            removed.append(path)
        except OSError:
            pass
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def fsync_dir(path: str) -> None:
    """Make a new or renamed name durable (best effort: some filesystems refuse fsync on a directory)."""
    try:
        fd = os.open(os.path.dirname(os.path.abspath(path)) or ".", os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
