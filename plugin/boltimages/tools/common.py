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
import errno
import os
import shutil
import sys
import time
from typing import Callable, Iterator, Optional

from ..errors import BoltImagesError, without_path
from .scratch import ScratchFile, fsync_dir

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_LOCKED = 3
EXIT_PROBLEMS = 4
EXIT_PARTIAL = 5

DEFAULT_DB = "/var/lib/containerd/io.containerd.metadata.v1.bolt/meta.db"


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


#: what to do about an OSError, by errno (the text after the file name and the system's reason)
_OS_ADVICE = {
    errno.EACCES: "run as root, or check the file's and its directory's permissions",
    errno.EPERM: "check the file's permissions and attributes ('lsattr': an immutable file cannot change)",
    errno.EROFS: "the filesystem is mounted read-only; work on a copy elsewhere",
    errno.ENOSPC: "free some space (or give --output on another filesystem) and run again",
    errno.EDQUOT: "the disk quota is exhausted; free some space and run again",
    errno.EISDIR: "give a file name, not a directory",
    errno.ENOTDIR: "a part of the path is not a directory",
    errno.EFBIG: "the file would exceed the size limit (ulimit -f)",
    errno.EIO: "the disk reported an I/O error; copy what you can and check the disk",
}


def os_error_text(exc: OSError, path: Optional[str] = None) -> str:
    """One line for an OSError: the file, what went wrong in words, and what to do.

    Never Python's ``[Errno 13] ...: '...'`` form, never the exception class.
    """
    name = path or exc.filename or "?"
    if exc.filename2 and not path:
        name = f"{exc.filename} -> {exc.filename2}"
    reason = (exc.strerror or str(exc)).rstrip(".").lower() if exc.errno else str(exc)
    if exc.errno == errno.ENOENT:
        parent = os.path.dirname(os.path.abspath(os.fspath(name))) if path or exc.filename else ""
        if parent and not os.path.isdir(parent):
            return f"{name}: directory {parent} does not exist; create it first"
        return f"{name}: no such file or directory"
    advice = _OS_ADVICE.get(exc.errno or 0)
    return f"{name}: {reason}" + (f"; {advice}" if advice else "")


def _probe_open(path: str, write: bool, create: bool) -> None:
    """Open the file the way the engine would, to get the OSError (errno and all) behind an engine I/O failure."""
    flags = (os.O_RDWR if write else os.O_RDONLY) | (os.O_CREAT if create else 0) | os.O_CLOEXEC
    existed = os.path.exists(path)
    fd = os.open(path, flags, 0o600)
    os.close(fd)
    if create and not existed:
        os.unlink(path)


def open_db(path: str, *, write: bool, create: bool = False, timeout: float = 1.0):
    """Open a metadata file, turning engine failures into one-line ToolErrors.

    Read-only opens take a shared lock, writes an exclusive one; containerd
    holds an exclusive lock while it runs, so both fail with DatabaseLocked
    and nothing is read or written.
    """
    bolt = engine()
    if os.path.isdir(path):
        raise ToolError(f"{path}: is a directory; give the metadata file itself (meta.db)")
    if not create and not os.path.exists(path):
        raise ToolError(os_error_text(FileNotFoundError(errno.ENOENT, "no such file", path)))
    try:
        return bolt.open(path, read_only=not write, create=create, timeout=timeout)
    except bolt.DatabaseLocked as exc:
        from ..lockholder import locked_text
        raise ToolError(locked_text(path), EXIT_LOCKED) from exc
    except (bolt.InvalidDatabase, bolt.VersionMismatch) as exc:
        raise ToolError(f"{path}: not a bolt database ({without_path(str(exc), path)}); "
                        "check the path (containerd's is .../io.containerd.metadata.v1.bolt/meta.db)") from exc
    except bolt.CorruptDatabase as exc:
        raise ToolError(damaged_text(path, exc)) from exc
    except bolt.BoltError as exc:
        try:
            _probe_open(path, write, create)
        except OSError as os_exc:
            raise ToolError(os_error_text(os_exc, path)) from exc
        raise ToolError(f"{path}: cannot open: {without_path(str(exc), path)}") from exc
    except OSError as exc:
        raise ToolError(os_error_text(exc, path)) from exc


def damaged_text(path: str, exc: BaseException) -> str:
    """A file the engine found damaged, as one line naming it once, with what to run next
    (open_db, and the CLI's last resort for a failure found later)."""
    return (f"{path}: damaged: {without_path(str(exc), path)}; "
            "run 'boltimages check', then 'boltimages salvage' to recover what it holds")


def backup_path(path: str) -> str:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    candidate = f"{path}.bak-{stamp}"
    n = 1
    while os.path.exists(candidate):
        candidate = f"{path}.bak-{stamp}.{n}"
        n += 1
    return candidate


def make_backup(path: str) -> str:
    """Copy the file (we hold its lock, so the copy is consistent) and return the copy's path.

    The copy is written into an unnamed file and named only once complete and
    synced, so a failed or killed backup leaves nothing that looks like one.
    """
    directory = os.path.dirname(os.path.abspath(path))
    try:
        with ScratchFile(directory) as scratch, open(path, "rb") as src:
            _copy_fd(src.fileno(), scratch.fd)
            copy_ownership(path, scratch.path)
            stop_point("backup-copied")
            while True:
                dest = backup_path(path)
                try:
                    scratch.publish(dest)
                    return dest
                except FileExistsError:
                    continue  # another backup took that second's name
    except OSError as exc:
        raise ToolError(f"cannot keep a backup of {path}: {os_error_text(exc, directory)}; "
                        "nothing was written (--no-backup skips the backup)") from exc


def _copy_fd(src: int, dst: int) -> None:
    size = os.fstat(src).st_size
    offset = 0
    while offset < size:
        sent = os.sendfile(dst, src, offset, min(size - offset, 1 << 30))
        if sent == 0:
            break
        offset += sent


def copy_ownership(src: str, dst: str) -> None:
    """Give dst the mode and owner of src, so a swapped-in file behaves like the original."""
    st = os.stat(src)
    os.chmod(dst, st.st_mode & 0o7777)
    with contextlib.suppress(PermissionError):
        os.chown(dst, st.st_uid, st.st_gid)


def keep_old_as_backup(target: str) -> str:
    """Name the current file as a backup before it is replaced: a hard link (instant, the very
    inode), or a complete copy where links are refused."""
    backup = backup_path(target)
    try:
        os.link(target, backup)
        return backup
    except OSError:
        return make_backup(target)


def replace_keeping_backup(target: str, new_path: str, swap: "Callable[[], None]",
                           keep_backup: bool) -> Optional[str]:
    """Run ``swap`` (which puts the new file in target's place) with target's mode and owner given
    to the new file and, if asked, the old file kept as a backup; a failed swap leaves no backup."""
    backup = None
    if os.path.exists(target):
        copy_ownership(target, new_path)
        if keep_backup:
            backup = keep_old_as_backup(target)
    try:
        swap()
    except BaseException:
        if backup:
            with contextlib.suppress(OSError):
                os.unlink(backup)
        raise
    fsync_dir(target)
    return backup



#: tests stop a command at a named point to kill it there (see stop_point)
STOP_ENV = "BOLTIMAGES_STOP_AT"


def stop_point(name: str) -> None:
    """Where a test may freeze this process to kill it at a known step, with no timing guesses:
    with BOLTIMAGES_STOP_AT=<name> the process says so on stderr, then stops itself (SIGSTOP)
    until the test kills or continues it. Without the variable this does nothing."""
    if os.environ.get(STOP_ENV) != name:
        return
    import signal
    os.environ.pop(STOP_ENV, None)  # once: a continued process runs on
    sys.stderr.write(f"stop-point {name} pid {os.getpid()}\n")
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGSTOP)


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
            backup_made = make_backup(path) if backup and existed else None
            try:
                tx.commit()
            except (OSError, engine().BoltError) as exc:
                with contextlib.suppress(Exception):
                    db.close()
                raise ToolError(_failed_commit_text(path, exc, existed, backup_made)) from exc
            if backup_made:
                note(f"backup: {backup_made}")
    finally:
        if not db.closed:
            db.close()
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)


def _failed_commit_text(path: str, exc: BaseException, existed: bool, backup: Optional[str]) -> str:
    """Undo what a failed commit left on disk, and say so in one line.

    The file is unchanged as containerd and bbolt read it (the meta pages still
    name the last commit), but it may have grown into the space the commit
    wanted; that space is given back, and a backup of an unchanged file or a
    file this command created is removed.
    """
    reason = without_path(str(exc), path)
    if backup:
        with contextlib.suppress(OSError):
            os.unlink(backup)
    if not existed:
        with contextlib.suppress(OSError):
            os.unlink(path)
        what = "nothing was written (the new file was removed)"
    else:
        freed = give_back_space(path)
        what = "the file is unchanged" + (f" (gave back {freed} bytes it had grown by)" if freed else "")
    advice = ""
    if os.strerror(errno.ENOSPC) in reason:
        advice = "; " + _OS_ADVICE[errno.ENOSPC]
    elif os.strerror(errno.EFBIG) in reason:
        advice = "; " + _OS_ADVICE[errno.EFBIG]
    return f"{path}: writing failed: {reason}; {what}{advice}"


def give_back_space(path: str) -> int:
    """Cut the file back to its committed size after a failed write; returns the bytes freed.

    Every bbolt reader accepts a file that ends at or after the last page the
    meta counts (``pgid * page size``): bbolt itself leaves files of exactly
    that length under NoFreelistSync, and compact writes them. We hold a
    shared lock while measuring and cutting, so no writer (containerd) can
    start in between; a file we cannot open or lock is left as it is.
    """
    bolt = engine()
    try:
        with bolt.open(path, read_only=True, timeout=1.0) as db:
            info = db.info()
            committed = int(info["pgid"]) * int(info["page_size"])
            size = os.path.getsize(path)
            if size <= committed:
                return 0
            os.truncate(path, committed)
            return size - committed
    except (OSError, bolt.BoltError):
        return 0
