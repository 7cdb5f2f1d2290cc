"""``check``: is the file sound, as bbolt sees it and as containerd reads it?

Two layers: the engine's structural check (every page reachable exactly once,
freelist consistent - bbolt's tx.Check), run in a child process because a
damaged file may crash a page walker; then containerd's layout: db version
known, and every namespace, image and content blob record passes the rules
containerd applies when it writes or reads one (store/validation.py).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
from typing import Any, Optional

from ..lockholder import locked_text
from ..store import codec, image_records, layout, validation
from . import records, selection
from .common import EXIT_LOCKED, EXIT_OK, EXIT_PROBLEMS, ToolError, open_db
from .progress import Progress

#: db versions containerd has shipped (1.0-1.2 used 1-2; 1.3-1.7: 3; 2.x: 4)
KNOWN_DB_VERSIONS = (1, 2, 3, 4)


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
        conn.send(("error", str(exc) or "the structural check failed unexpectedly"))


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
    """Every record containerd would refuse or read differently from what it
    holds, as "<bucket path>: <why>" (rules: store/validation.py); ``bar`` (a
    Progress) advances once per image and blob record."""
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
    for key, value in v1.items():
        if value is None:
            problems += _namespace_problems(v1.bucket(key), f"v1/{validation.show_key(key)}", key, bar)
    return problems


def _namespace_problems(ns: Any, where: str, name: bytes, bar: Optional[Any]) -> list[str]:
    problems = [f"{where}: {p} (containerd refuses every request naming it, removal included)"
                for p in validation.namespace_problems(name)]
    problems += [f"{where}/{p}" for p in validation.label_bucket_problems(ns, "namespace.Labels")]
    if ns.get(layout.IMAGES_BUCKET) is not None:
        problems.append(f"{where}/images: a value where containerd expects a bucket (it lists no images)")
    images = ns.bucket(layout.IMAGES_BUCKET)
    for key, value in images.items() if images is not None else ():
        if bar is not None:
            bar.advance()
        path = f"{where}/images/{validation.show_key(key)}"
        if value is not None:
            problems.append(f"{path}: a value where containerd expects an image bucket "
                            "(it fails to list the namespace)")
            continue
        record = images.bucket(key)
        # the values as the one reader reads them; the bucket shows their layout
        raw = image_records.read_one(key, record)
        problems += [f"{path}: {p}" for p in validation.image_record_problems(record, raw)]
    leases = ns.bucket(layout.LEASES_BUCKET)
    for key, value in leases.items() if leases is not None else ():
        path = f"{where}/leases/{validation.show_key(key)}"
        if value is not None:
            problems.append(f"{path}: a value where containerd expects a lease bucket (it skips it)")
            continue
        lease = leases.bucket(key)
        problem = validation.time_problem(lease.get(layout.CREATED_AT_KEY))
        if problem is not None and problem != "missing":
            problems.append(f"{path}: createdat: {problem} (containerd fails to list leases)")
    content = ns.bucket(layout.CONTENT_BUCKET)
    blobs = content.bucket(layout.BLOB_BUCKET) if content is not None else None
    for key, value in blobs.items() if blobs is not None else ():
        if bar is not None:
            bar.advance()
        path = f"{where}/content/blob/{validation.show_key(key)}"
        if value is not None:
            problems.append(f"{path}: a value where a bucket belongs")
            continue
        problems += [f"{path}: {p}" for p in validation.blob_key_problems(key)]
        bkt = blobs.bucket(key)
        for tkey in (layout.CREATED_AT_KEY, layout.UPDATED_AT_KEY):
            problem = validation.time_problem(bkt.get(tkey))
            if problem is not None and problem != "missing":
                problems.append(f"{path}: {tkey.decode()}: {problem}")
        size = bkt.get(layout.SIZE_KEY)
        if size is not None:
            try:
                codec.decode_varint_exact(size)
            except codec.CodecError as exc:
                problems.append(f"{path}: size does not decode: {exc}")
        problems += [f"{path}/{p}" for p in validation.label_bucket_problems(bkt, "content.Labels")]
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
