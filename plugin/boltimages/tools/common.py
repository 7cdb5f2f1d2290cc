"""What every offline tool shares: opening the file safely, errors, backups, progress.

Exit codes (documented in ``boltimages --help``):
  0  success
  1  the command failed (bad input, missing image, unreadable file, ...)
  2  usage error (bad flags)
  3  the file is locked by another process (containerd running); nothing was touched
  4  a check or verification found problems
  5  salvage finished but some records could not be recovered
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import time
from typing import Iterator, Optional, TextIO

from ..errors import BoltImagesError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_LOCKED = 3
EXIT_PROBLEMS = 4
EXIT_PARTIAL = 5

DEFAULT_DB = "/var/lib/containerd/io.containerd.metadata.v1.bolt/meta.db"
DEFAULT_CONTENT_ROOT = "/var/lib/containerd/io.containerd.content.v1.content"

LOCKED_TEXT = "locked by another process — is containerd running?"


class ToolError(Exception):
    """A failure reported to the user as one line, with an exit code."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


def refused(where: str, exc: BoltImagesError) -> ToolError:
    """A write containerd's validation refuses (store/validation.py): one line
    saying which record and why; the command's transaction is rolled back."""
    return ToolError(f"{where}: {exc.detail or exc}; nothing written")


def engine():
    """The engine module, imported late so ``--help`` works without the C extension."""
    try:
        from .. import bolt
    except ImportError as exc:  # extension not built
        raise ToolError(f"storage engine unavailable ({exc}); build it with "
                        "'python setup.py build_ext --inplace'") from exc
    return bolt


def open_db(path: str, *, write: bool, create: bool = False, timeout: float = 1.0):
    """Open a metadata file, turning engine failures into one-line ToolErrors.

    Read-only opens take a shared lock, writes an exclusive one; containerd
    holds an exclusive lock while it runs, so both fail with DatabaseLocked
    and nothing is read or written.
    """
    bolt = engine()
    if not create and not os.path.exists(path):
        raise ToolError(f"{path}: no such file")
    try:
        return bolt.open(path, read_only=not write, create=create, timeout=timeout)
    except bolt.DatabaseLocked as exc:
        raise ToolError(f"{path}: {LOCKED_TEXT}", EXIT_LOCKED) from exc
    except (bolt.InvalidDatabase, bolt.CorruptDatabase, bolt.VersionMismatch) as exc:
        raise ToolError(f"{path}: cannot open: {_without_path(exc, path)} (try 'boltimages salvage')") from exc
    except bolt.BoltError as exc:
        raise ToolError(f"{path}: cannot open: {_without_path(exc, path)}") from exc
    except OSError as exc:
        raise ToolError(f"{path}: {exc.strerror or exc}") from exc


def _without_path(exc: BaseException, path: str) -> str:
    """The engine prefixes its messages with the path; we already say it once."""
    text = str(exc)
    while text.startswith(path + ": "):
        text = text[len(path) + 2:]
    return text


def backup_path(path: str) -> str:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    candidate = f"{path}.bak-{stamp}"
    n = 1
    while os.path.exists(candidate):
        candidate = f"{path}.bak-{stamp}.{n}"
        n += 1
    return candidate


def make_backup(path: str) -> str:
    """Copy the file (we hold its lock, so the copy is consistent) and return the copy's path."""
    dest = backup_path(path)
    shutil.copy2(path, dest)
    _fsync_path(dest)
    return dest


def _fsync_path(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str) -> None:
    with contextlib.suppress(OSError):
        _fsync_path(os.path.dirname(os.path.abspath(path)) or ".")


def copy_ownership(src: str, dst: str) -> None:
    """Give dst the mode and owner of src, so a swapped-in file behaves like the original."""
    st = os.stat(src)
    os.chmod(dst, st.st_mode & 0o7777)
    with contextlib.suppress(PermissionError):
        os.chown(dst, st.st_uid, st.st_gid)


def atomic_replace(new: str, target: str, keep_backup: bool) -> Optional[str]:
    """Swap new into target's place; the old file stays as a backup unless told otherwise."""
    backup = None
    if os.path.exists(target):
        copy_ownership(target, new)
        if keep_backup:
            backup = backup_path(target)
            try:
                os.link(target, backup)  # instant, and the backup is exactly the old inode
            except OSError:
                shutil.copy2(target, backup)
                _fsync_path(backup)
    _fsync_path(new)
    os.replace(new, target)
    fsync_dir(target)
    return backup


class Progress:
    """A one-line progress indicator on stderr, only when stderr is a terminal."""

    def __init__(self, label: str, total: Optional[int] = None, stream: TextIO = sys.stderr) -> None:
        self.label = label
        self.total = total
        self.done = 0
        self.stream = stream
        self.enabled = stream.isatty()
        self._last = 0.0

    def advance(self, n: int = 1) -> None:
        self.done += n
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last < 0.1:
            return
        self._last = now
        if self.total:
            pct = min(100, self.done * 100 // self.total)
            bar = "#" * (pct // 4)
            self.stream.write(f"\r{self.label} [{bar:<25}] {pct:3d}%")
        else:
            self.stream.write(f"\r{self.label} {self.done}")
        self.stream.flush()

    def finish(self) -> None:
        if self.enabled:
            self.stream.write("\r\x1b[K")
            self.stream.flush()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: object) -> None:
        self.finish()


def say(text: str, quiet: bool = False) -> None:
    if not quiet:
        print(text)


def note(text: str) -> None:
    """Diagnostics go to stderr so stdout stays machine-readable."""
    print(text, file=sys.stderr)


class Session:
    """One writing command's transaction; set ``changed`` when something was written."""

    def __init__(self, db: object, tx: object) -> None:
        self.db = db
        self.tx = tx
        self.changed = False


@contextlib.contextmanager
def writing(path: str, *, dry_run: bool, backup: bool, create: bool = False) -> Iterator[Session]:
    """Open path and yield a Session: a write tx, or a read tx when dry-running.

    The whole command runs in that one transaction: it commits when the block
    ends normally and rolls back on any error. When the command changed
    something, a backup copy of the file as it was is taken just before the
    commit (we hold the lock, so the copy is consistent); a command that
    changes nothing commits nothing and leaves no backup.
    """
    existed = os.path.exists(path)
    scratch = None
    if dry_run and create and not existed:
        # nothing to read yet: plan against an empty scratch file instead
        import tempfile
        scratch = tempfile.mkdtemp(prefix="boltimages-dry-")
        db = open_db(os.path.join(scratch, "empty.db"), write=True, create=True)
    else:
        db = open_db(path, write=not dry_run, create=create and not dry_run)
    try:
        tx = db.begin(write=not dry_run)
        session = Session(db, tx)
        try:
            yield session
        except BaseException:
            tx.rollback()
            raise
        if dry_run or not session.changed:
            tx.rollback()
        else:
            if backup and existed:
                note(f"backup: {make_backup(path)}")
            tx.commit()
    finally:
        db.close()
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)
