"""Claiming the unix socket path safely.

gRPC unlinks whatever is at a unix socket path before binding, which would
silently steal the socket of a server that is still running. So before
binding we look ourselves:

* nothing there: fine;
* a socket nobody accepts on (a crashed server left it): stale, removed;
* a socket something accepts on: refused with a clear error;
* anything that is not a socket: refused (we never delete a user's file).

A lock file beside the socket (``<socket>.lock``, flock) closes the race
between two boltimages processes starting at the same moment.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import stat
from typing import Optional


class SocketInUse(Exception):
    """The socket path belongs to a live server or is not ours to replace."""


def _probe(path: str) -> bool:
    """True when something accepts connections on the unix socket at ``path``."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(1.0)
    try:
        sock.connect(path)
        return True
    except socket.timeout:
        return True  # a listener with a full backlog is still alive
    except OSError as exc:
        if exc.errno in (errno.ECONNREFUSED, errno.ENOENT):
            return False
        if exc.errno in (errno.EACCES, errno.EPERM):
            raise SocketInUse(f"cannot check socket {path}: permission denied") from None
        return False
    finally:
        sock.close()


class SocketClaim:
    """Holds the lock for a socket path while the server runs."""

    def __init__(self, path: str, dir_mode: int) -> None:
        self.path = path
        self._lock_fd: Optional[int] = None
        parent = os.path.dirname(os.path.abspath(path))
        try:
            os.makedirs(parent, mode=dir_mode, exist_ok=True)
        except OSError as exc:
            raise SocketInUse(f"cannot create socket directory {parent}: {exc.strerror or exc}") from None
        lock_path = path + ".lock"
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise SocketInUse(f"cannot create lock file {lock_path}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise SocketInUse(f"another boltimages server is using {path}") from None
        self._lock_fd = fd
        try:
            self._clear_stale()
        except BaseException:
            self.release(remove_socket=False)
            raise

    def _clear_stale(self) -> None:
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(st.st_mode):
            raise SocketInUse(f"{self.path} exists and is not a socket; refusing to replace it")
        if _probe(self.path):
            raise SocketInUse(f"another server is listening on {self.path}; refusing to take over its socket")
        os.unlink(self.path)

    def release(self, remove_socket: bool = True) -> None:
        if remove_socket:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
            except OSError:
                pass
        if self._lock_fd is not None:
            try:
                os.unlink(self.path + ".lock")
            except OSError:
                pass
            os.close(self._lock_fd)
            self._lock_fd = None
