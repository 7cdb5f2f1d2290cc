"""``copy``: images from one file+namespace into another file and/or namespace.

Copies the image records and, for every blob reachable from each image's
target (walked through the content store directory), the content blob record
``v1/<ns>/content/blob/<digest>`` with its GC reference labels, so that in the
target namespace ``ctr images check`` reports the image complete and GC keeps
its content. Blob files themselves are shared by all namespaces on a node and
are not copied.
"""

from __future__ import annotations

import argparse
import contextlib
import os
from typing import Any

from ..errors import InvalidArgument
from ..store import image_records, validation
from ..store.image_records import RawImage
from . import content_walk, records, selection
from .common import EXIT_OK, ToolError, note, open_db, refused, writing


def run_copy(args: argparse.Namespace) -> int:
    dst_path = args.to_db or args.db
    dst_ns = args.to_namespace or args.namespace
    same_file = os.path.realpath(dst_path) == os.path.realpath(args.db)
    if same_file and dst_ns == args.namespace:
        raise ToolError("source and target are the same namespace of the same file; "
                        "give --to-namespace or --to-db")
    if not args.names and not args.filters and not args.all:
        raise ToolError("name images to copy, or give --filter or --all")
    try:
        validation.validate_namespace(dst_ns)
    except InvalidArgument as exc:
        raise refused("--to-namespace" if args.to_namespace else "--namespace", exc) from None
    compiled = selection.compile_filters(args.filters)
    prefix = "would " if args.dry_run else ""
    stats = {"images": 0, "skipped": 0, "blobs": 0, "blobs_kept": 0, "missing": 0}
    with contextlib.ExitStack() as stack:
        session = stack.enter_context(writing(dst_path, dry_run=args.dry_run, backup=not args.no_backup,
                                              create=True))
        dst_tx = session.tx
        if same_file:
            src_tx = dst_tx
        else:
            src_db = stack.enter_context(open_db(args.db, write=False))
            src_tx = stack.enter_context(src_db.begin())
        imgs = [img for _, img in selection.select_images(src_tx, [args.namespace], args.names, compiled)]
        missing = sorted(set(args.names) - {i.text_name() for i in imgs})
        if missing:
            raise ToolError(f"image(s) not found in {args.db} namespace {args.namespace!r}: "
                            + ", ".join(missing) + "; nothing written")
        for img in imgs:
            # containerd's Create would refuse such a copy; so do we, before writing anything
            try:
                image_records.validate(img)
            except InvalidArgument as exc:
                raise refused(f"image {args.namespace}/{img.text_name()}", exc) from None
        if dst_tx.writable:
            records.ensure_schema(dst_tx, records.db_version(src_tx))
        for img in imgs:
            _copy_one(img, src_tx, dst_tx, dst_ns, args, prefix, stats)
        session.changed = stats["images"] > 0
    note(f"{prefix}copy {stats['images']} image(s) ({stats['skipped']} skipped), "
         f"{stats['blobs']} blob record(s) ({stats['blobs_kept']} already there)"
         + (f"; {stats['missing']} blob(s) absent from {args.content_root}" if stats["missing"] else ""))
    return EXIT_OK


def _copy_one(img: RawImage, src_tx: Any, dst_tx: Any, dst_ns: str, args: argparse.Namespace,
              prefix: str, stats: dict[str, int]) -> None:
    name = img.text_name()
    images = records.images_bucket(dst_tx, dst_ns)
    existing = images.bucket(img.name) if images is not None else None
    if existing is not None:
        if not image_records.same_content(image_records.read_one(img.name, existing), img):
            if args.on_conflict == "fail":
                raise ToolError(f"image {name!r} already exists in namespace {dst_ns!r} with other "
                                "content (use --on-conflict skip|overwrite); nothing written")
            if args.on_conflict == "skip":
                print(f"{prefix}skip {name} (exists in {dst_ns})")
                stats["skipped"] += 1
                return
    print(f"{prefix}copy {args.namespace}/{name} -> {dst_ns}/{name}")
    stats["images"] += 1
    now = records.now_bytes()
    digest = records.text(img.digest or b"")
    for node in content_walk.reachable(args.content_root, digest, records.text(img.media_type or b""),
                                       img.size_value()):
        src_blob = records.read_blob(src_tx, args.namespace, node.digest)
        if src_blob is None and not node.present:
            # never fetched (e.g. another platform of an index): nothing to record
            if node.digest == digest:
                stats["missing"] += 1
                note(f"warning: {name}: target {node.digest} is neither recorded nor under "
                     f"{args.content_root}")
            continue
        if not node.present:
            stats["missing"] += 1
            note(f"warning: blob {node.digest} of {name} has a record but no file under {args.content_root}")
        if node.digest in stats_done(stats) or records.read_blob(dst_tx, dst_ns, node.digest) is not None:
            stats["blobs_kept"] += 1
            continue
        if src_blob is not None:
            blob = src_blob  # containerd's own record, GC labels included: copied as is
        else:
            # no record in the source (e.g. merging from a node whose records were lost):
            # label the children the way containerd does when it fetches an image
            blob = records.Blob(node.digest, node.size, now, now, dict(node.child_labels))
        stats["blobs"] += 1
        stats_done(stats).add(node.digest)
        if dst_tx.writable:
            records.write_blob(dst_tx, dst_ns, blob)
    if dst_tx.writable:
        image_records.replace_record(records.images_bucket(dst_tx, dst_ns, create=True), img)


def stats_done(stats: dict) -> set:
    """Blob digests already recorded in this run (a dry run writes nothing to look them up in)."""
    return stats.setdefault("_done", set())
