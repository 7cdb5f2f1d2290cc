"""``copy``: images from one file+namespace into another file and/or namespace.

Copies the image records and, for every blob reachable from each image's
target (walked through the content store directory), the content blob record
``v1/<ns>/content/blob/<digest>`` with its GC reference labels, so that in the
target namespace ``ctr images check`` reports the image complete and GC keeps
its content. Blob files themselves are shared by all namespaces on a node and
are not copied.

Without a readable content store the records would be copied without their
content records and containerd would show the images ``unavailable``; so
copy refuses unless told ``--records-only``. The store is found next to
``--db`` the way ``serve`` finds it (store/rootdirs.py). ``import`` writes
content records with the same code (:func:`add_content_records`).
"""

from __future__ import annotations

import argparse
import contextlib
import os
from dataclasses import dataclass, field
from typing import Any, Optional

from ..errors import InvalidArgument
from ..store import image_records, rootdirs, validation
from ..store.image_records import RawImage
from . import content_walk, records, selection
from .common import EXIT_OK, EXIT_USAGE, ToolError, note, open_db, refused, writing
from .progress import Progress


@dataclass
class ContentStats:
    """What add_content_records did over a run (several images may share blobs)."""

    written: int = 0
    kept: int = 0  # already recorded in the target namespace
    absent: int = 0  # reachable blobs neither recorded nor present under the content root
    done: set[str] = field(default_factory=set)  # recorded in this run (a dry run cannot look them up)

    def text(self, prefix: str, content_root: Optional[str]) -> str:
        out = f"{prefix}add {self.written} content record(s) ({self.kept} already there)"
        if self.absent:
            out += f"; {self.absent} blob(s) absent from {content_root}"
        return out


def resolve_content_root(db_path: str, given: Optional[str], records_only: bool, command: str) -> Optional[str]:
    """The content store to walk: the one given, else the one next to ``db_path``; None with --records-only.

    Refuses (usage error) when there is none it can read, because records
    copied without their content records are images containerd cannot use.
    """
    if records_only:
        return None
    root = given or rootdirs.default_content_root(db_path)
    if root is None:
        where = rootdirs.expected_content_root(db_path)
        found = (f"no content store at {where}" if where else
                 f"{db_path} is not in a containerd root (<root>/{rootdirs.METADATA_DIR}/meta.db)")
        raise ToolError(f"{command} writes the content records containerd needs and reads them from the "
                        f"content store: {found}; give --content-root DIR (containerd's "
                        f"<root>/{rootdirs.CONTENT_DIR}), or --records-only to write image records alone "
                        "(containerd then shows those images as unavailable)", EXIT_USAGE)
    if not os.path.isdir(root):
        raise ToolError(f"{root}: no such directory (--content-root)", EXIT_USAGE)
    if not os.access(root, os.R_OK | os.X_OK):
        raise ToolError(f"{root}: cannot read the content store (permission denied); run as root", EXIT_USAGE)
    return root


def add_content_records(img: RawImage, dst_tx: Any, dst_ns: str, content_root: str,
                        stats: ContentStats, src_tx: Any = None, src_ns: str = "",
                        verbose: bool = False) -> None:
    """Record in ``dst_ns`` every blob reachable from the image's target, as containerd would.

    A blob recorded in the source namespace (``src_tx``, namespace
    ``src_ns``) is copied as is, GC labels included; one only in the
    content store gets the labels containerd gives a fetched image's blobs.
    """
    now = records.now_bytes()
    name = img.text_name()
    digest = records.text(img.digest or b"")
    for node in content_walk.reachable(content_root, digest, records.text(img.media_type or b""),
                                       img.size_value()):
        src_blob = records.read_blob(src_tx, src_ns, node.digest) if src_tx is not None else None
        if src_blob is None and not node.present:
            # never fetched (e.g. another platform of an index): nothing to record
            if node.digest == digest:
                stats.absent += 1
                if verbose:
                    note(f"warning: {name}: target {node.digest} is neither recorded nor under {content_root}")
            continue
        if not node.present:
            stats.absent += 1
            if verbose:
                note(f"warning: blob {node.digest} of {name} has a record but no file under {content_root}")
        if node.digest in stats.done or records.read_blob(dst_tx, dst_ns, node.digest) is not None:
            stats.kept += 1
            continue
        if src_blob is not None:
            blob = src_blob  # containerd's own record, GC labels included: copied as is
        else:
            # no record in the source (e.g. merging from a node whose records were lost):
            # label the children the way containerd does when it fetches an image
            blob = records.Blob(node.digest, node.size, now, now, dict(node.child_labels))
        stats.written += 1
        stats.done.add(node.digest)
        if dst_tx.writable:
            records.write_blob(dst_tx, dst_ns, blob)


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
    content_root = resolve_content_root(args.db, args.content_root, args.records_only, "copy")
    prefix = "would " if args.dry_run else ""
    copied = skipped = 0
    stats = ContentStats()
    with contextlib.ExitStack() as stack:
        session = stack.enter_context(writing(dst_path, dry_run=args.dry_run, backup=not args.no_backup,
                                              create=True))
        dst_tx = session.tx
        if same_file:
            src_tx = dst_tx
        else:
            src_db = stack.enter_context(open_db(args.db, write=False))
            src_tx = stack.enter_context(src_db.begin())
        with Progress("reading", selection.count_images(src_tx, [args.namespace], args.names)) as bar:
            imgs = [img for _, img in selection.select_images(src_tx, [args.namespace], args.names, compiled, bar)]
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
        with Progress("copy", len(imgs)) as bar:
            for img in imgs:
                if _copy_one(img, src_tx, dst_tx, dst_ns, args, prefix, content_root, stats):
                    copied += 1
                else:
                    skipped += 1
                bar.advance()
        session.changed = copied > 0
    if not args.quiet:
        content = stats.text(prefix, content_root) if content_root else "no content records (--records-only)"
        note(f"{prefix}copy {copied} image(s) ({skipped} skipped); {content}")
    return EXIT_OK


def _copy_one(img: RawImage, src_tx: Any, dst_tx: Any, dst_ns: str, args: argparse.Namespace,
              prefix: str, content_root: Optional[str], stats: ContentStats) -> bool:
    """Write (or plan) one image and its content records; False when it is skipped."""
    name = img.text_name()
    images = records.images_bucket(dst_tx, dst_ns)
    existing = images.bucket(img.name) if images is not None else None
    if existing is not None:
        if not image_records.same_content(image_records.read_one(img.name, existing), img):
            if args.on_conflict == "fail":
                raise ToolError(f"image {name!r} already exists in namespace {dst_ns!r} with other "
                                "content (use --on-conflict skip|overwrite); nothing written")
            if args.on_conflict == "skip":
                if args.verbose:
                    print(f"{prefix}skip {name} (exists in {dst_ns})")
                return False
    if args.verbose:
        print(f"{prefix}copy {args.namespace}/{name} -> {dst_ns}/{name}")
    if content_root is not None:
        add_content_records(img, dst_tx, dst_ns, content_root, stats, src_tx=src_tx, src_ns=args.namespace,
                            verbose=args.verbose)
    if dst_tx.writable:
        image_records.replace_record(records.images_bucket(dst_tx, dst_ns, create=True), img)
    return True
