"""The ``boltimages`` command: the images service (``serve``) and offline tools for meta.db.

Every offline command works on a metadata file containerd is NOT running on
(containerd holds an exclusive lock; we refuse rather than wait) and reports
failures as one line on stderr with the exit codes listed in the epilog.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from typing import Callable, Optional, Sequence

from .tools import common

EPILOG = """exit codes:
  0  success
  1  the command failed (bad input, image not found, unreadable file)
  2  usage error
  3  the file is locked by another process (containerd running); nothing touched
  4  check or verification found problems
  5  salvage wrote a file but some records were lost (see its report)

The metadata file defaults to $BOLTIMAGES_DB or
/var/lib/containerd/io.containerd.metadata.v1.bolt/meta.db."""


class _PrintVersion(argparse.Action):
    """``--version``: the version and the source revision, like ``containerd
    --version``. Looked up only when asked (the revision may run git)."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS,
                 default: str = argparse.SUPPRESS, help: Optional[str] = None) -> None:  # noqa: A002 - argparse's name
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: object,
                 option_string: Optional[str] = None) -> None:
        from .version import PRODUCT, package_version, revision
        print(f"{PRODUCT} {package_version()} {revision()}")
        parser.exit(0)


def _default_db() -> str:
    return os.environ.get("BOLTIMAGES_DB", common.DEFAULT_DB)


def _db_parent() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--db", metavar="PATH", default=_default_db(),
                   help="containerd metadata file (default: %(default)s)")
    return p


def _write_parent() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--dry-run", action="store_true", help="print what would change, write nothing")
    p.add_argument("--no-backup", action="store_true",
                   help="do not keep a copy of the file as it was (PATH.bak-<time>)")
    return p


def _output_parent() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("-q", "--quiet", action="store_true",
                   help="no progress bar and no summary; failures are still reported on stderr")
    p.add_argument("-v", "--verbose", action="store_true", help="list every record as it is handled")
    return p


def _content_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--content-root", metavar="DIR",
                   help="containerd's content store, to write the content records containerd needs "
                        "(default: <root>/io.containerd.content.v1.content next to --db, when --db is "
                        "<root>/io.containerd.metadata.v1.bolt/meta.db)")
    p.add_argument("--records-only", action="store_true",
                   help="write image records without content records (containerd shows such images "
                        "as unavailable until their content is pulled again)")


def _filter_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--filter", "-f", dest="filters", action="append", default=[], metavar="FILTER",
                   help="containerd filter, e.g. 'name~=alpine' or 'labels.\"a.b\"==c' "
                        "(repeat: any may match)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="boltimages", description="containerd images service on a bbolt-compatible engine, "
        "and offline tools for containerd's metadata file.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action=_PrintVersion, help="print the version and source revision, then exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    db, wr, out = _db_parent(), _write_parent(), _output_parent()

    def cmd(name: str, help_text: str, parents: Sequence[argparse.ArgumentParser],
            handler: Callable[[argparse.Namespace], int]) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text, parents=list(parents),
                           epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
        p.set_defaults(handler=handler)
        return p

    _add_serve(sub)

    from .tools import (check, compact, copying, edit, listing, porting, salvage)
    p = cmd("ls", "list namespaces' images, like 'ctr images ls' (SIZE is the target descriptor's "
            "size: the file alone does not know layer sizes)", [db], listing.run_ls)
    p.add_argument("-n", "--namespace", help="only this namespace (default: all)")
    _filter_arg(p)
    p.add_argument("--format", choices=["table", "json"], default="table")
    p.add_argument("-q", "--quiet", action="store_true", help="print only image names")
    p.add_argument("--namespaces", action="store_true",
                   help="list namespaces and their labels instead, like 'ctr namespaces ls'")

    p = cmd("inspect", "show image records in full, as JSON", [db], listing.run_inspect)
    p.add_argument("-n", "--namespace", help="only this namespace (default: all)")
    p.add_argument("names", nargs="+", metavar="NAME")

    cmd("check", "check the file's structure (as bbolt) and containerd's record layout", [db, out],
        check.run_check)

    p = cmd("compact", "rewrite the file without free space, verify the copy", [db, out], compact.run_compact)
    p.add_argument("-o", "--output", help="write the compacted copy here")
    p.add_argument("--in-place", action="store_true",
                   help="replace the file atomically after verification (keeps PATH.bak-<time>)")
    p.add_argument("--no-backup", action="store_true", help="with --in-place: keep no backup")
    p.add_argument("--dry-run", action="store_true", help="compact and verify into a scratch file only")
    p.add_argument("--force", action="store_true", help="overwrite an existing OUTPUT")
    p.add_argument("--tx-max-bytes", type=int, default=64 << 20, help=argparse.SUPPRESS)

    p = cmd("export", "write image records and namespace labels as JSON Lines", [db, out], porting.run_export)
    p.add_argument("-n", "--namespace", help="only this namespace (default: all)")
    _filter_arg(p)
    p.add_argument("-o", "--output", help="file to write (default: stdout)")
    p.add_argument("names", nargs="*", metavar="NAME", help="only these images")

    p = cmd("import", "read JSON Lines written by export into the file (created if missing)", [db, wr, out],
            porting.run_import)
    p.description += (". Every record must pass containerd's own checks (namespace name, labels, image "
                      "name, target digest, size, media type, times) or nothing is written. A missing "
                      "createdAt/updatedAt is stamped with the time of the import, as containerd stamps a "
                      "new image (an image already stored under that name keeps its times).")
    p.add_argument("-i", "--input", help="file to read (default: stdin)")
    p.add_argument("-n", "--namespace", help="put every record into this namespace instead")
    p.add_argument("--on-conflict", choices=["skip", "overwrite", "fail"], default="fail",
                   help="an image that exists with other content (default: %(default)s)")
    _content_args(p)

    p = cmd("copy", "copy images (and their content blob records) to another namespace and/or file",
            [db, wr, out], copying.run_copy)
    p.add_argument("-n", "--namespace", default="default", help="source namespace (default: %(default)s)")
    p.add_argument("--to-namespace", help="target namespace (default: the source namespace)")
    p.add_argument("--to-db", metavar="PATH", help="target file (default: the source file; created if missing)")
    _content_args(p)
    p.add_argument("--on-conflict", choices=["skip", "overwrite", "fail"], default="fail")
    p.add_argument("--all", action="store_true", help="every image of the source namespace")
    _filter_arg(p)
    p.add_argument("names", nargs="*", metavar="NAME")

    p = cmd("tag", "give an image more names, like 'ctr images tag'", [db, wr], edit.run_tag)
    p.add_argument("-n", "--namespace", default="default", help="namespace (default: %(default)s)")
    p.add_argument("--force", action="store_true", help="replace existing images of those names")
    p.add_argument("source", metavar="SOURCE")
    p.add_argument("targets", nargs="+", metavar="TARGET")

    p = cmd("rm", "remove images, like 'ctr images rm' (GC runs when containerd next starts)", [db, wr],
            edit.run_rm)
    p.add_argument("-n", "--namespace", default="default", help="namespace (default: %(default)s)")
    p.add_argument("names", nargs="+", metavar="NAME")

    p = cmd("label", "set (KEY=VALUE) or remove (KEY=) image labels, like 'ctr images label'",
            [db, wr], edit.run_label)
    p.add_argument("-n", "--namespace", default="default", help="namespace (default: %(default)s)")
    p.add_argument("name", metavar="NAME")
    p.add_argument("labels", nargs="*", metavar="KEY=VALUE")

    p = cmd("salvage", "recover what a damaged file still holds into a new file, with a loss report",
            [db, out], salvage.run_salvage)
    p.add_argument("-o", "--output", required=True, help="the new file (the input is never modified)")
    p.add_argument("--report", metavar="JSON", help="also write the report as JSON here")
    p.add_argument("--dry-run", action="store_true", help="read and report only")
    p.add_argument("--force", action="store_true", help="overwrite an existing OUTPUT")
    return parser


def _add_serve(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    help_text = "run the images gRPC service on containerd's metadata file"
    try:
        from .server import cli_serve
    except ImportError as exc:
        # bound now: Python unbinds `exc` when the except block ends, and the
        # handler runs later
        reason = str(exc)
        p = sub.add_parser("serve", help=help_text, description=f"{help_text} (unavailable: {reason})")
        p.set_defaults(handler=lambda _args: _unavailable(reason))
        return
    p = sub.add_parser("serve", help=help_text, description=help_text)
    cli_serve.add_serve_arguments(p)
    p.set_defaults(handler=cli_serve.run_serve, raw_handler=True)


def _unavailable(reason: str) -> int:
    raise common.ToolError(f"serve is unavailable: {reason}")


class _StdoutGuard:
    """stdout that survives the reader going away (``boltimages check ... | head -3``).

    When the pipe closes, Python raises BrokenPipeError at whatever print
    happens next, and the command's real result (problems found: exit 4) is
    lost. Instead the guard notes the closed pipe, drops further output, and
    lets the command finish and return its own status.
    """

    def __init__(self, stream) -> None:
        self._stream = stream
        self.closed_early = False

    def write(self, text: str) -> int:
        if self.closed_early:
            return len(text)
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._closed()
            return len(text)

    def flush(self) -> None:
        if self.closed_early:
            return
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._closed()

    def _closed(self) -> None:
        self.closed_early = True
        # the interpreter flushes stdout at exit: point fd 1 at /dev/null so that flush cannot fail
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, self._stream.fileno())
        os.close(devnull)

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "raw_handler", False):
        result = args.handler(args)
        return int(result or 0)
    from .tools import progress
    progress.set_quiet(bool(getattr(args, "quiet", False)))
    # past a file size limit (ulimit -f) the kernel sends SIGXFSZ, which kills a process
    # mid-commit; ignored, the write fails with EFBIG and the command cleans up and says so
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    guard = _StdoutGuard(sys.stdout)
    sys.stdout = guard
    try:
        return _run(args)
    finally:
        guard.flush()
        sys.stdout = guard._stream


def _run(args: argparse.Namespace) -> int:
    try:
        return int(args.handler(args) or 0)
    except common.ToolError as exc:
        print(f"boltimages {args.command}: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        print(f"boltimages {args.command}: interrupted; the file is unchanged unless a commit finished",
              file=sys.stderr)
        return 130
    except Exception as exc:  # last resort: still one line, never a traceback or a class name
        print(f"boltimages {args.command}: {_user_text(exc, args)}", file=sys.stderr)
        if os.environ.get("BOLTIMAGES_DEBUG"):
            raise
        return common.EXIT_LOCKED if type(exc).__name__ == "DatabaseLocked" else common.EXIT_FAILED


def _user_text(exc: BaseException, args: argparse.Namespace) -> str:
    """A failure no tool turned into a ToolError, as one line a user can act
    on: our own errors and the engine's carry readable text (the file named
    once), the system's errors get the file, the reason and what to do;
    anything else is a bug, said so, with the way to get the traceback."""
    from .errors import BoltImagesError
    name = type(exc).__name__
    where = getattr(args, "db", "") or ""
    if name in ("CorruptDatabase", "InvalidDatabase"):
        return common.damaged_text(where, exc)
    if name == "DatabaseLocked":
        from .lockholder import locked_text
        return locked_text(where or "?")
    if isinstance(exc, BoltImagesError):
        return exc.detail or str(exc)
    if type(exc).__module__.endswith(".bolt"):  # the engine's own text (IOFailure too) names the file
        return str(exc)
    if isinstance(exc, OSError):
        return common.os_error_text(exc)
    return f"unexpected failure ({exc}); run with BOLTIMAGES_DEBUG=1 for details"


if __name__ == "__main__":
    sys.exit(main())
