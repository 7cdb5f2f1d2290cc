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
import json
import sys
from typing import Any, Iterator, TextIO

from ..errors import InvalidArgument
from ..store import image_records, layout, validation
from ..store.image_records import RawImage
from . import records, selection
from .common import EXIT_FAILED, EXIT_OK, Progress, ToolError, note, open_db, refused, writing

FORMAT_VERSION = 1


def run_export(args: argparse.Namespace) -> int:
    compiled = selection.compile_filters(args.filters)
    out: TextIO = sys.stdout if args.output in (None, "-") else open(args.output, "w", encoding="utf-8")
    count = 0
    exported: set[str] = set()
    try:
        with open_db(args.db, write=False) as db, db.begin() as tx:
            spaces = selection.pick_namespaces(tx, args.namespace)
            _line(out, {"kind": "boltimages-export", "version": FORMAT_VERSION,
                        "dbVersion": records.db_version(tx)})
            with Progress("export") as bar:
                for ns in spaces:
                    _line(out, {"kind": "namespace", "namespace": ns, "labels": records.namespace_labels(tx, ns)})
                    for _, img in selection.select_images(tx, [ns], args.names, compiled):
                        doc = records.image_to_json(ns, img)
                        _line(out, doc)
                        exported.add(doc["name"])
                        count += 1
                        bar.advance()
    finally:
        if out is not sys.stdout:
            out.close()
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
    with writing(args.db, dry_run=args.dry_run, backup=not args.no_backup, create=True) as session:
        tx = session.tx
        if not args.dry_run:
            v1 = tx.bucket(layout.SCHEMA_BUCKET)
            if v1 is None or v1.get(layout.DB_VERSION_KEY) is None:
                changes.append(f"initialise the file (db version {header_version or 3})")
            records.ensure_schema(tx, header_version)
        for number, doc in docs:
            kind = doc["kind"]
            try:
                if kind == "namespace":
                    _import_namespace(tx, doc, args, changes)
                elif kind == "image":
                    ns, img = records.image_from_json(doc)
                    _import_image(tx, args.namespace or ns, img, args, changes, conflicts)
                elif kind != "boltimages-export":
                    raise ValueError(f"unknown kind {kind!r}")
            except InvalidArgument as exc:
                raise refused(f"line {number}", exc) from None
            except (ValueError, TypeError) as exc:
                raise ToolError(f"line {number}: {exc}; nothing written") from exc
        if conflicts and args.on_conflict == "fail":
            raise ToolError(f"{len(conflicts)} image(s) already exist with other content: "
                            + ", ".join(conflicts[:5]) + (" ..." if len(conflicts) > 5 else "")
                            + " (use --on-conflict skip|overwrite); nothing written")
        session.changed = bool(changes)
    prefix = "would " if args.dry_run else ""
    for change in changes:
        print(f"{prefix}{change}")
    note(f"{prefix}apply {len(changes)} change(s)" + (f", {len(conflicts)} conflict(s)" if conflicts else ""))
    return EXIT_OK


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
                  changes: list[str], conflicts: list[str]) -> None:
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
            return
        conflicts.append(where)
        if args.on_conflict != "overwrite":
            if args.on_conflict == "skip":
                changes.append(f"skip image {where} (exists with other content)")
            return
        changes.append(f"overwrite image {where}")
    else:
        changes.append(f"add image {where} -> {records.text(img.digest or b'')}")
    if tx.writable:
        image_records.replace_record(records.images_bucket(tx, ns, create=True), img)


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
