"""``check``: is the file sound, as bbolt sees it and as containerd reads it?

Two layers: the engine's structural check (every page reachable exactly once,
freelist consistent - bbolt's tx.Check), run in a child process because a
damaged file may crash a page walker; then containerd's layout: db version
known, every image has a decodable target and timestamps, every content blob
record decodes.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import re
from typing import Any, Optional

from ..store import codec, layout
from . import records, selection
from .progress import Progress
from ..lockholder import locked_text
from .common import EXIT_LOCKED, EXIT_OK, EXIT_PROBLEMS, ToolError, open_db

#: db versions containerd has shipped (1.0-1.2 used 1-2; 1.3-1.7: 3; 2.x: 4)
KNOWN_DB_VERSIONS = (1, 2, 3, 4)
_DIGEST = re.compile(r"^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$")


def _structural_child(path: str, conn: Any) -> None:
    try:
        from .. import bolt
        try:
            conn.send(("ok", bolt.check_file(path)))
        except bolt.DatabaseLocked:
            conn.send(("locked", ""))
        except bolt.BoltError as exc:
            conn.send(("error", str(exc)))
    except Exception as exc:  # anything else still becomes a message, not a hang
        conn.send(("error", f"{type(exc).__name__}: {exc}"))


def structural_problems(path: str) -> list[str]:
    """bbolt-style check of the file, isolated from this process."""
    ctx = multiprocessing.get_context("fork")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_structural_child, args=(path, child))
    proc.start()
    child.close()
    result = None
    try:
        if parent.poll(None):
            result = parent.recv()
    except EOFError:
        result = None
    proc.join()
    if result is None:
        return [f"the structural check crashed (exit {proc.exitcode}): the file is badly damaged"]
    kind, payload = result
    if kind == "locked":
        raise ToolError(locked_text(path), EXIT_LOCKED)
    if kind == "error":
        return [f"cannot be checked: {payload}"]
    return list(payload)


def layout_problems(tx: Any, bar: Optional[Any] = None) -> list[str]:
    """containerd's record layout; ``bar`` (a Progress) advances once per image and blob record."""
    problems: list[str] = []
    v1 = tx.bucket(layout.SCHEMA_BUCKET)
    if v1 is None:
        return ["no v1 bucket: not a containerd metadata file (or an empty one)"]
    raw_version = v1.get(layout.DB_VERSION_KEY)
    if raw_version is None:
        problems.append("v1/version missing")
    else:
        try:
            version = codec.decode_varint_exact(raw_version)
            if version not in KNOWN_DB_VERSIONS:
                problems.append(f"v1/version is {version}, not a version containerd knows {KNOWN_DB_VERSIONS}")
        except codec.CodecError as exc:
            problems.append(f"v1/version does not decode: {exc}")
    for ns in records.namespaces(tx):
        for img in records.iter_images(tx, ns):
            if bar is not None:
                bar.advance()
            for p in img.problems:
                problems.append(f"namespace {ns!r} image {img.name!r}: {p}")
        blobs = records.blob_bucket(tx, ns)
        if blobs is None:
            continue
        for key, value in blobs.items():
            if bar is not None:
                bar.advance()
            where = f"namespace {ns!r} blob {records.text(key)!r}"
            if value is not None:
                problems.append(f"{where}: a value where a bucket belongs")
                continue
            if not _DIGEST.match(records.text(key)):
                problems.append(f"{where}: key is not a digest")
            bkt = blobs.bucket(key)
            for tkey in (layout.CREATED_AT_KEY, layout.UPDATED_AT_KEY):
                data = bkt.get(tkey)
                if data is None:
                    continue
                try:
                    codec.decode_time(data)
                except codec.CodecError as exc:
                    problems.append(f"{where}: {tkey.decode()} does not decode: {exc}")
            size = bkt.get(layout.SIZE_KEY)
            if size is not None:
                try:
                    codec.decode_varint_exact(size)
                except codec.CodecError as exc:
                    problems.append(f"{where}: size does not decode: {exc}")
    return problems


def check_file(path: str) -> tuple[list[str], Optional[list[str]]]:
    """(structural problems, layout problems)."""
    # take the lock question first so a running containerd is reported as such
    try:
        db = open_db(path, write=False)
    except ToolError as exc:
        if exc.code == EXIT_LOCKED or not os.path.exists(path):
            raise
        # the engine refuses the file outright: that is the check's finding, not a usage failure
        return [str(exc)], None
    db.close()
    structural = structural_problems(path)
    layout_found: list[str] = []
    try:
        with open_db(path, write=False) as db, db.begin() as tx, \
                Progress("check", _record_count(tx)) as bar:
            layout_found = layout_problems(tx, bar)
    except ToolError as exc:
        layout_found = [str(exc)]
    except Exception as exc:  # a damaged tree surfaces as an engine error mid-walk
        layout_found = [f"reading records failed: {exc}"]
    return structural, layout_found


def _record_count(tx: Any) -> Optional[int]:
    """Images and blob records, the check's progress total (keys only); None if it cannot be counted."""
    try:
        spaces = records.namespaces(tx)
        total = selection.count_images(tx, spaces)
        for ns in spaces:
            blobs = records.blob_bucket(tx, ns)
            if blobs is not None:
                total += sum(1 for _ in blobs.keys())
        return total
    except Exception:  # noqa: BLE001 - a damaged tree: the check itself will say where
        return None


def run_check(args: argparse.Namespace) -> int:
    structural, layout_found = check_file(args.db)
    if structural:
        print(f"{args.db}: structure: {len(structural)} problem(s)")
        for p in structural:
            print(f"  {p}")
    else:
        print(f"{args.db}: structure: ok")
    if layout_found is None:
        print(f"{args.db}: containerd layout: not checked (the file cannot be opened)")
    elif layout_found:
        print(f"{args.db}: containerd layout: {len(layout_found)} problem(s)")
        for p in layout_found:
            print(f"  {p}")
    else:
        print(f"{args.db}: containerd layout: ok")
    return EXIT_PROBLEMS if structural or layout_found else EXIT_OK
