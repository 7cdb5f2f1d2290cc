"""``ls`` and ``inspect``: what a metadata file holds, without a running containerd."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..store import validation
from . import records, selection
from .common import EXIT_FAILED, EXIT_OK, open_db
from .progress import Progress


def human_size(n: int) -> str:
    """Sizes the way ctr prints them (go-units HumanSizeWithPrecision, base 1024)."""
    units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"]
    value = float(n)
    i = 0
    while value >= 1024 and i < len(units) - 1:
        value /= 1024
        i += 1
    return f"{value:.1f} {units[i]}"


def label_text(labels: dict[str, str]) -> str:
    if not labels:
        return "-"
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def run_ls(args: argparse.Namespace) -> int:
    compiled = selection.compile_filters(args.filters)
    with open_db(args.db, write=False) as db, db.begin() as tx:
        spaces = selection.pick_namespaces(tx, args.namespace)
        with Progress("ls", selection.count_images(tx, spaces)) as bar:
            imgs = list(selection.select_images(tx, spaces, [], compiled, bar))
        ns_info = {ns: records.namespace_labels(tx, ns) for ns in spaces}
        version = records.db_version(tx)
    if args.format == "json":
        print(json.dumps({"dbVersion": version,
                          "namespaces": [{"name": ns, "labels": ns_info[ns]} for ns in spaces],
                          "images": [records.image_to_json(ns, img) for ns, img in imgs]}, indent=2,
                         ensure_ascii=True))
        return EXIT_OK
    if args.namespaces:
        rows = [["NAME", "LABELS"]] + [[ns, label_text(ns_info[ns])] for ns in spaces]
        print_table(rows)
        return EXIT_OK
    if args.quiet:
        for _, img in imgs:
            print(img.text_name())
        return EXIT_OK
    show_ns = args.namespace is None
    header = (["NAMESPACE"] if show_ns else []) + ["REF", "TYPE", "DIGEST", "SIZE", "CREATED", "LABELS"]
    rows = [header]
    for ns, img in imgs:
        doc = records.image_to_json(ns, img)
        target = doc["target"]
        rows.append(([ns] if show_ns else []) + [
            doc["name"], target["mediaType"], target["digest"], human_size(target["size"]),
            (doc["createdAt"] or "-")[:19], label_text(doc["labels"])])
    print_table(rows)
    return EXIT_OK


def print_table(rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print(" ".join(cell.ljust(widths[i]) if i < len(row) - 1 else cell for i, cell in enumerate(row)).rstrip())


def run_inspect(args: argparse.Namespace) -> int:
    found: list[dict[str, Any]] = []
    with open_db(args.db, write=False) as db, db.begin() as tx:
        spaces = selection.pick_namespaces(tx, args.namespace)
        for ns, img in selection.select_images(tx, spaces, args.names, None):
            doc = records.image_to_json(ns, img)
            # containerd's rules on the record as read (check adds its layout)
            problems = validation.image_problems(img)
            if problems:
                doc["problems"] = problems
            found.append(doc)
    missing = sorted(set(args.names) - {d["name"] for d in found})
    print(json.dumps(found, indent=2, ensure_ascii=True))
    for name in missing:
        print(f"image {name!r}: not found", file=sys.stderr)
    return EXIT_FAILED if missing else EXIT_OK
