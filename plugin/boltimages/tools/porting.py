"""``export`` / ``import``: image records and namespace labels as JSON Lines.

One JSON object per line, ``"kind"`` first:
  {"kind": "namespace", "namespace": "default", "labels": {...}}
  {"kind": "image", "namespace": "default", "name": "...",
   "target": {"mediaType", "digest", "size", "annotations"}, "labels": {...},
   "createdAt": "2024-05-01T10:00:00.123456789Z", "updatedAt": "..."}
Times keep all nine fraction digits and the zone Go stored ("Z" = UTC), so
importing an export writes byte-identical records. The first line is a
header {"kind": "boltimages-export", "version": 1, "dbVersion": N}.

Import writes only what containerd itself would accept (store/validation.py):
namespace names, labels, image names and targets are checked as containerd's
Create checks them, and stored times must decode. A record without
createdAt/updatedAt gets the time of the import, as containerd's Create
stamps a new image (an existing image of that name keeps its own). The first
refused record stops the import and nothing is written.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from typing import Any, Iterator, Optional, TextIO

from ..errors import InvalidArgument
from ..store import image_records, layout, rootdirs, validation
from ..store.image_records import RawImage
from . import records, selection
from .copying import ContentStats, add_content_records, resolve_content_root
from .common import EXIT_FAILED, EXIT_OK, ToolError, note, open_db, os_error_text, refused, writing
from .progress import Progress
from .scratch import ScratchFile

FORMAT_VERSION = 1


def run_export(args: argparse.Namespace) -> int:
    compiled = selection.compile_filters(args.filters)
    to_file = args.output not in (None, "-")
    if to_file and os.path.isdir(args.output):
        raise ToolError(f"{args.output}: is a directory; give the name of the file to write")
    count = 0
    exported: set[str] = set()
    with contextlib.ExitStack() as stack:
        db = stack.enter_context(open_db(args.db, write=False))
        tx = stack.enter_context(db.begin())
        out: TextIO = sys.stdout
        scratch = None
        if to_file:
            # written unnamed and named when complete: a failed export leaves no half file
            try:
                scratch = stack.enter_context(ScratchFile(os.path.dirname(os.path.abspath(args.output))))
            except OSError as exc:
                raise ToolError(os_error_text(exc, args.output)) from exc
            out = stack.enter_context(open(os.dup(scratch.fd), "w", encoding="utf-8"))
        spaces = selection.pick_namespaces(tx, args.namespace)
        _line(out, {"kind": "boltimages-export", "version": FORMAT_VERSION,
                    "dbVersion": records.db_version(tx)})
        with Progress("export", selection.count_images(tx, spaces, args.names)) as bar:
            for ns in spaces:
                _line(out, {"kind": "namespace", "namespace": ns, "labels": records.namespace_labels(tx, ns)})
                for _, img in selection.select_images(tx, [ns], args.names, compiled, bar):
                    doc = records.image_to_json(ns, img)
                    _line(out, doc)
                    exported.add(doc["name"])
                    count += 1
        if scratch is not None:
            out.flush()
            try:
                scratch.replace(args.output)
            except OSError as exc:
                raise ToolError(f"{os_error_text(exc, args.output)}; nothing was written") from exc
    if not args.quiet:
        note(f"exported {count} image(s) from {len(spaces)} namespace(s)")
    missing = sorted(set(args.names) - exported)
    for name in missing:
        note(f"image {name!r}: not found")
    return EXIT_FAILED if missing else EXIT_OK


def _line(out: TextIO, doc: dict[str, Any]) -> None:
    out.write(json.dumps(doc, ensure_ascii=True, sort_keys=False) + "\n")


def read_lines(source: TextIO) -> Iterator[tuple[int, dict[str, Any]]]:
    for number, line in enumerate(source, 1):
        line = line.strip()
        if not line:
            continue
        try:
            doc = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ToolError(f"line {number}: not JSON: {exc.msg}") from exc
        if not isinstance(doc, dict) or "kind" not in doc:
            raise ToolError(f"line {number}: not a record (no \"kind\")")
        yield number, doc


def run_import(args: argparse.Namespace) -> int:
    if args.namespace is not None:
        try:
            validation.validate_namespace(args.namespace)
        except InvalidArgument as exc:
            raise refused("--namespace", exc) from None
    src: TextIO = sys.stdin if args.input in (None, "-") else open(args.input, encoding="utf-8")
    try:
        docs = list(read_lines(src))
    finally:
        if src is not sys.stdin:
            src.close()
    header_version = None
    for number, doc in docs:
        if doc["kind"] == "boltimages-export":
            if doc.get("version") != FORMAT_VERSION:
                raise ToolError(f"line {number}: export format version {doc.get('version')} not supported")
            header_version = doc.get("dbVersion")
    changes: list[str] = []
    conflicts: list[str] = []
    content_root = _import_content_root(args)
    content = ContentStats()
    no_content: dict[str, int] = {}  # namespace -> images whose target has no content record there
    with writing(args.db, dry_run=args.dry_run, backup=not args.no_backup, create=True) as session:
        tx = session.tx
        if not args.dry_run:
            v1 = tx.bucket(layout.SCHEMA_BUCKET)
            if v1 is None or v1.get(layout.DB_VERSION_KEY) is None:
                changes.append(f"initialise the file (db version {header_version or 3})")
            records.ensure_schema(tx, header_version)
        with Progress("import", len(docs)) as bar:
            for number, doc in docs:
                kind = doc["kind"]
                try:
                    if kind == "namespace":
                        _import_namespace(tx, doc, args, changes)
                    elif kind == "image":
                        ns, img = records.image_from_json(doc)
                        ns = args.namespace or ns
                        if _import_image(tx, ns, img, args, changes, conflicts):
                            _import_content(tx, ns, img, content_root, content, no_content, args.verbose)
                    elif kind != "boltimages-export":
                        raise ValueError(f"unknown kind {kind!r}")
                except InvalidArgument as exc:
                    raise refused(f"line {number}", exc) from None
                except (ValueError, TypeError) as exc:
                    raise ToolError(f"line {number}: {exc}; nothing written") from exc
                bar.advance()
        if conflicts and args.on_conflict == "fail":
            raise ToolError(f"{len(conflicts)} image(s) already exist with other content: "
                            + ", ".join(conflicts[:5]) + (" ..." if len(conflicts) > 5 else "")
                            + " (use --on-conflict skip|overwrite); nothing written")
        session.changed = bool(changes) or content.written > 0
    prefix = "would " if args.dry_run else ""
    if args.verbose:
        for change in changes:
            print(f"{prefix}{change}")
    if not args.quiet:
        note(f"{prefix}apply {len(changes)} change(s)" + _change_summary(changes)
             + (f", {len(conflicts)} conflict(s)" if conflicts else ""))
        if content_root is not None and (content.written or content.kept or content.absent):
            note(content.text(prefix, content_root))
    for ns, count in sorted(no_content.items()):
        # said even with --quiet: these images look imported but containerd cannot use them
        note(f"warning: {count} imported image(s) have no content record for their target in namespace "
             f"{ns!r}: containerd shows them as unavailable. "
             + ("Give --content-root DIR (the node's content store) to add the content records, as copy does"
                if content_root is None else f"their content is not under {content_root} either; pull them "
                "again with containerd"))
    return EXIT_OK


def _change_summary(changes: list[str]) -> str:
    """': 50000 add image, 1 create namespace': each change starts with its verb and object."""
    counts: dict[str, int] = {}
    for change in changes:
        kind = " ".join([w for w in change.split() if w != "the"][:2])
        counts[kind] = counts.get(kind, 0) + 1
    if not counts:
        return ""
    return " (" + ", ".join(f"{kind} x{n}" for kind, n in counts.items()) + ")"


def _import_content_root(args: argparse.Namespace) -> Optional[str]:
    """The content store to take content records from: given, or next to --db; None when there is
    none (then import says which images containerd will show as unavailable)."""
    if args.records_only:
        return None
    if args.content_root:
        return resolve_content_root(args.db, args.content_root, False, "import")
    return rootdirs.default_content_root(args.db)


def _import_content(tx: Any, ns: str, img: RawImage, content_root: Optional[str], stats: ContentStats,
                    no_content: dict[str, int], verbose: bool) -> None:
    if content_root is not None:
        add_content_records(img, tx, ns, content_root, stats, verbose=verbose)
    digest = records.text(img.digest or b"")
    if digest in stats.done or records.read_blob(tx, ns, digest) is not None:
        return
    no_content[ns] = no_content.get(ns, 0) + 1


def _import_namespace(tx: Any, doc: dict[str, Any], args: argparse.Namespace, changes: list[str]) -> None:
    ns = args.namespace or doc.get("namespace")
    if not isinstance(ns, str) or not ns:
        raise ValueError("namespace record without a name")
    labels = {str(k): str(v) for k, v in (doc.get("labels") or {}).items()}
    validation.validate_namespace(ns)
    validation.validate_labels(labels, f"namespace {ns}: namespace.Labels")
    current = records.namespace_labels(tx, ns)
    v1 = tx.bucket(layout.SCHEMA_BUCKET)
    exists = v1 is not None and v1.bucket(ns.encode()) is not None
    if not exists:
        changes.append(f"create namespace {ns}")
    merged = dict(current)
    for key, value in labels.items():
        if key in current and current[key] != value and args.on_conflict == "skip":
            continue
        merged[key] = value
    if merged != current:
        changes.append(f"set labels of namespace {ns}: " + ", ".join(
            f"{k}={v}" for k, v in sorted(merged.items()) if current.get(k) != v))
    if tx.writable and (merged != current or not exists):
        nsb = tx.create_bucket_if_not_exists(layout.SCHEMA_BUCKET).create_bucket_if_not_exists(ns.encode())
        if merged != current:
            records.write_map(nsb, layout.NS_LABELS_BUCKET, merged)


def _import_image(tx: Any, ns: str, img: RawImage, args: argparse.Namespace,
                  changes: list[str], conflicts: list[str]) -> bool:
    """Write (or plan) one image record; True when it is (to be) written or already there."""
    validation.validate_namespace(ns)
    images = records.images_bucket(tx, ns)
    existing = images.bucket(img.name) if images is not None else None
    where = f"{ns}/{img.text_name()}"
    old = image_records.read_one(img.name, existing) if existing is not None else None
    _fill_times(img, old)
    try:
        image_records.validate(img)
    except InvalidArgument as exc:
        raise exc.wrap(f"image {where}") from None
    if old is not None:
        if image_records.same_content(old, img):
            return True  # already there: its content records may still be missing
        conflicts.append(where)
        if args.on_conflict != "overwrite":
            if args.on_conflict == "skip":
                changes.append(f"skip image {where} (exists with other content)")
            return False
        changes.append(f"overwrite image {where}")
    else:
        changes.append(f"add image {where} -> {records.text(img.digest or b'')}")
    if tx.writable:
        image_records.replace_record(records.images_bucket(tx, ns, create=True), img)
    return True


def _fill_times(img: RawImage, old: "RawImage | None") -> None:
    """Times a record left out: those of the image already stored under that
    name (so importing the same file twice changes nothing), else now, as
    containerd's Create stamps a new image."""
    if img.created is not None and img.updated is not None:
        return
    now = records.now_bytes()
    if img.created is None:
        img.created = old.created if old is not None and old.created else now
    if img.updated is None:
        img.updated = old.updated if old is not None and old.updated else now
