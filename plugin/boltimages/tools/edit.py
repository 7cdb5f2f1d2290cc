"""``tag``, ``rm`` and ``label`` on a file, like ``ctr images tag/rm/label``.

Each command is one transaction; times are stamped the way containerd's
image store does (UTC now): tag sets created and updated of the new record,
label sets updated.
"""

from __future__ import annotations

import argparse
from typing import Any

from ..errors import InvalidArgument
from ..store import codec, image_records
from ..store.image_records import RawImage
from . import records
from .common import EXIT_FAILED, EXIT_OK, ToolError, note, refused, writing


def _prefix(args: argparse.Namespace) -> str:
    return "would " if args.dry_run else ""


def _validated(namespace: str, new: RawImage) -> None:
    """What containerd's Create or Update checks before writing ``new``; a
    refusal names the record and leaves the file as it was."""
    try:
        image_records.validate(new)
    except InvalidArgument as exc:
        raise refused(f"image {new.text_name()!r} in namespace {namespace!r}", exc) from None


def _existing_image(tx: Any, namespace: str, name: str) -> tuple[Any, Any, RawImage]:
    """(the namespace's images bucket, the image's bucket, the record read
    from it); ToolError when there is no such image, before anything is written."""
    images = records.images_bucket(tx, namespace)
    key = records.raw(name)
    bkt = images.bucket(key) if images is not None else None
    if bkt is None:
        raise ToolError(f"image {name!r} in namespace {namespace!r}: not found")
    return images, bkt, image_records.read_one(key, bkt)


def run_tag(args: argparse.Namespace) -> int:
    with writing(args.db, dry_run=args.dry_run, backup=not args.no_backup) as session:
        tx = session.tx
        images, _, img = _existing_image(tx, args.namespace, args.source)
        stamp = records.now_bytes()
        # each new record is the source's under another name: containerd's Create checks it
        tagged = [(target, RawImage(records.raw(target), stamp, stamp, img.labels, img.annotations,
                                    img.has_target, img.digest, img.media_type, img.size))
                  for target in args.targets]
        for _, new in tagged:
            _validated(args.namespace, new)
        for target in args.targets:
            if images.bucket(records.raw(target)) is not None and not args.force:
                raise ToolError(f"image {target!r}: already exists (use --force); nothing written")
        for target, new in tagged:
            print(f"{_prefix(args)}tag {target}")
            if tx.writable:
                image_records.replace_record(images, new)
                session.changed = True
    return EXIT_OK


def run_rm(args: argparse.Namespace) -> int:
    missing = []
    with writing(args.db, dry_run=args.dry_run, backup=not args.no_backup) as session:
        tx = session.tx
        images = records.images_bucket(tx, args.namespace)
        for name in args.names:
            key = records.raw(name)
            if images is None or images.bucket(key) is None:
                missing.append(name)
                continue
            print(f"{_prefix(args)}remove {name}")
            if tx.writable:
                images.delete_bucket(key)
                session.changed = True
    for name in missing:
        note(f"image {name!r}: not found")
    if len(missing) < len(args.names) and not args.dry_run:
        note("content of removed images is collected by containerd's GC when it next starts")
    return EXIT_FAILED if missing else EXIT_OK


def run_label(args: argparse.Namespace) -> int:
    changes: dict[str, str] = {}
    for item in args.labels:
        key, sep, value = item.partition("=")
        if not key or not sep:
            raise ToolError(f"label {item!r}: expected KEY=VALUE (empty VALUE removes the label)")
        changes[key] = value
    with writing(args.db, dry_run=args.dry_run, backup=not args.no_backup) as session:
        tx = session.tx
        _, bkt, img = _existing_image(tx, args.namespace, args.name)
        current = records.image_labels(img)
        labels = dict(current)
        for key, value in changes.items():
            if value:
                labels[key] = value
            else:
                labels.pop(key, None)
        if labels != current:
            # as containerd's Update: labels and updatedat, the rest as stored (a
            # missing createdat reads as Go's zero time, which Update then writes)
            created = img.created if img.created is not None else codec.encode_time(codec.GO_ZERO_TIME)
            new = RawImage(img.name, created, records.now_bytes(), image_records.pairs_of(labels),
                           img.annotations, img.has_target, img.digest, img.media_type, img.size)
            _validated(args.namespace, new)
            if tx.writable:
                image_records.write_record(bkt, new, img)
                session.changed = True
        for key, value in sorted(labels.items()):
            print(f"{_prefix(args)}{key}={value}" if args.dry_run else f"{key}={value}")
    return EXIT_OK
