"""``compact``: rewrite the file without its free pages, verify, optionally swap it in.

The copy is checked (structure and layout) and compared entry by entry with
the original before anything replaces the original; with ``--in-place`` the
original stays next to it as a backup unless ``--no-backup``.
"""

from __future__ import annotations

import argparse
import os
import tempfile

from . import check, treewalk
from .common import (EXIT_OK, EXIT_PROBLEMS, ToolError, atomic_replace, engine, note, open_db)


def run_compact(args: argparse.Namespace) -> int:
    src = args.db
    if not args.in_place and not args.output:
        raise ToolError("compact needs -o OUTPUT or --in-place")
    if args.output and os.path.exists(args.output) and not args.force:
        raise ToolError(f"{args.output}: already exists (use --force to overwrite)")
    bolt = engine()
    before = os.path.getsize(src) if os.path.exists(src) else 0
    target_dir = os.path.dirname(os.path.abspath(args.output or src))
    fd, tmp = tempfile.mkstemp(prefix=".compact-", suffix=".db", dir=target_dir)
    os.close(fd)
    os.unlink(tmp)
    try:
        # the source stays open (shared lock) until the swap: containerd cannot start meanwhile
        with open_db(src, write=False) as db:
            try:
                db.compact_to(tmp, tx_max_bytes=args.tx_max_bytes)
            except bolt.BoltError as exc:
                raise ToolError(f"{src}: compaction failed: {exc}") from exc
            after = os.path.getsize(tmp)
            live_before = _live_bytes(db)
            structural = check.structural_problems(tmp)
            with open_db(tmp, write=False) as out, db.begin() as tx_src, out.begin() as tx_dst:
                # only what the copy got wrong: records the source already held
                # that way are check's business, not a failed compaction
                layout_problems = sorted(set(check.layout_problems(tx_dst)) - set(check.layout_problems(tx_src))) \
                    if tx_src.bucket(b"v1") is not None else []
                diff = treewalk.first_difference(tx_src, tx_dst)
            if structural or diff or layout_problems:
                for p in structural + layout_problems:
                    note(f"  {p}")
                if diff:
                    note(f"  content differs {diff}")
                raise ToolError("compacted copy failed verification; original left untouched", EXIT_PROBLEMS)
            with open_db(tmp, write=False) as out:
                live_after = _live_bytes(out)
            saved = 100 * (before - after) // before if before else 0
            print(f"live data: {live_before} bytes (with {_free_text(db)}) -> {live_after} bytes")
            if args.dry_run:
                print(f"{src}: {before} bytes -> {after} bytes ({saved}% smaller); dry run, nothing written")
                return EXIT_OK
            if args.in_place:
                backup = atomic_replace(tmp, src, keep_backup=not args.no_backup)
                print(f"{src}: {before} bytes -> {after} bytes ({saved}% smaller), verified, swapped in"
                      + (f"; backup {backup}" if backup else ""))
            else:
                atomic_replace(tmp, args.output, keep_backup=False)
                print(f"{src}: {before} bytes -> {args.output}: {after} bytes ({saved}% smaller), verified")
        return EXIT_OK
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _live_bytes(db) -> int:
    info = db.info()
    return int(info["pgid"]) * int(info["page_size"])


def _free_text(db) -> str:
    info = db.info()
    return f"{info['free_count'] + info['pending_count']} free pages"
