"""``salvage``: recover what a damaged metadata file still holds into a new, valid file.

The damaged file is only read (by rawpages' tolerant reader, never by the
engine, which rightly refuses it). The newest valid meta page is used, or the
other one when that recovers more; damaged pages are skipped and reported
with the bucket and key range they covered; unreachable leaf pages that the
freelist does not list - typically the children of a damaged branch page -
are matched back to the lost key range they fit and recovered. The output is
written through the engine in one transaction, then checked.
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import tempfile
from typing import Any, Optional

from ..store import layout
from . import check, rawpages
from .common import EXIT_OK, EXIT_PARTIAL, EXIT_PROBLEMS, Progress, ToolError, atomic_replace


def recover(data: bytes) -> dict[str, Any]:
    """Read data tolerantly; returns the tree and a structured report."""
    try:
        raw = rawpages.RawFile(data)
    except rawpages.PageError as exc:
        raise ToolError(f"nothing to salvage: {exc}") from exc
    report: dict[str, Any] = {"page_size": raw.page_size, "file_pages": raw.page_count(), "metas": [],
                              "lost": [], "recovered_orphans": [], "ambiguous_orphans": [], "notes": []}
    for meta in raw.metas:
        report["metas"].append({"slot": meta.slot, "txid": meta.txid, "valid": meta.valid,
                                "problem": meta.problem, "root": meta.root, "pgid": meta.pgid})
    walks = []
    for meta in raw.valid_metas():
        walk = rawpages.TolerantReader(raw, meta).read()
        walks.append((meta, walk))
    meta, walk = walks[0]
    root_lost = any(loss.path == () and loss.pgid == meta.root for loss in walk.losses)
    if walk.losses and len(walks) > 1:
        other_meta, other = walks[1]
        if root_lost and other.root.count() > walk.root.count():
            # the newest tree is gone from its root: the previous commit's tree is the best left
            report["notes"].append(f"meta {meta.slot} (txid {meta.txid}) has an unreadable root page; "
                                   f"meta {other_meta.slot} (txid {other_meta.txid}) is used instead: "
                                   "changes of the last transaction are lost")
            meta, walk = other_meta, other
        elif not other.losses:
            # newest data first; the older tree would bring back stale records too
            report["notes"].append(f"the previous commit (meta {other_meta.slot}, txid {other_meta.txid}) "
                                   "is intact; records are taken from the newest commit")
    if meta.slot != raw.valid_metas()[0].slot or any(not m.valid for m in raw.metas):
        bad = [m for m in raw.metas if not m.valid]
        for m in bad:
            report["notes"].append(f"meta page {m.slot} is invalid ({m.problem}); using meta {meta.slot} "
                                   f"(txid {meta.txid})")
    report["meta_used"] = meta.slot
    report["txid"] = meta.txid
    if walk.losses:
        others = [w for m, w in walks if m.slot != meta.slot]
        _adopt_orphans(raw, meta, walk, others[0] if others else None, report)
    free = raw.freelist(meta)
    if free is None and meta.freelist != rawpages.NO_FREELIST:
        report["notes"].append(f"freelist page {meta.freelist} is unreadable (it is rebuilt in the output)")
    elif free:
        both = sorted(free & walk.visited)
        if both:
            report["notes"].append(f"{len(both)} page(s) are both in use and listed free (double free), "
                                   f"e.g. {both[:5]}; the output has a fresh freelist")
    report["lost"] = [loss.describe() for loss in walk.losses]
    report["lost_detail"] = [{"bucket": [p.decode("utf-8", "backslashreplace") for p in loss.path],
                              "page": loss.pgid, "reason": loss.reason,
                              "from": None if loss.lo is None else loss.lo.decode("utf-8", "backslashreplace"),
                              "to": None if loss.hi is None else loss.hi.decode("utf-8", "backslashreplace")}
                             for loss in walk.losses]
    report["dropped"] = drop_incomplete_records(walk.root)
    report["images"] = _image_counts(walk.root)
    report["entries"] = walk.root.count()
    return {"tree": walk.root, "report": report}


def _image_counts(root: rawpages.Bucket) -> dict[str, int]:
    v1 = root.buckets.get(layout.SCHEMA_BUCKET)
    out: dict[str, int] = {}
    for ns_name, ns in (v1.buckets.items() if v1 else []):
        images = ns.buckets.get(layout.IMAGES_BUCKET)
        out[ns_name.decode("utf-8", "backslashreplace")] = len(images.buckets) if images else 0
    return out


def drop_incomplete_records(root: rawpages.Bucket) -> list[str]:
    """Remove containerd records that lost a required part with a damaged page.

    containerd's image reader fails the whole Images/List when one image has
    no target bucket, so a half-recovered image would hide every image of its
    namespace; a blob record without a size would report a wrong size. Such
    records are dropped and named in the report.
    """
    dropped: list[str] = []
    v1 = root.buckets.get(layout.SCHEMA_BUCKET)
    if v1 is None:
        return dropped
    for ns_name, ns in v1.buckets.items():
        ns_text = ns_name.decode("utf-8", "backslashreplace")
        images = ns.buckets.get(layout.IMAGES_BUCKET)
        for name, img in list(images.buckets.items()) if images else []:
            target = img.buckets.get(layout.TARGET_BUCKET)
            ok = (target is not None and target.values.get(layout.DIGEST_KEY)
                  and target.values.get(layout.MEDIA_TYPE_KEY) and layout.SIZE_KEY in target.values)
            if not ok:
                del images.buckets[name]
                dropped.append(f"v1/{ns_text}/images/{name.decode('utf-8', 'backslashreplace')}: "
                               "image record incomplete (target lost with a damaged page); dropped")
        content = ns.buckets.get(layout.CONTENT_BUCKET)
        blobs = content.buckets.get(layout.BLOB_BUCKET) if content else None
        for digest, blob in list(blobs.buckets.items()) if blobs else []:
            if layout.SIZE_KEY not in blob.values:
                del blobs.buckets[digest]
                dropped.append(f"v1/{ns_text}/content/blob/{digest.decode('utf-8', 'backslashreplace')}: "
                               "blob record incomplete (size lost with a damaged page); dropped")
    return dropped


def _find_bucket(root: rawpages.Bucket, path: tuple[bytes, ...]) -> Optional[rawpages.Bucket]:
    node = root
    for part in path:
        node = node.buckets.get(part)
        if node is None:
            return None
    return node


def _lost_page_was_branch(raw: rawpages.RawFile, meta: rawpages.Meta, loss: rawpages.Loss,
                          older: Optional[rawpages.Walk]) -> bool:
    """Whether the lost page held only pointers (a branch), so its orphaned children can be adopted.

    All leaves of a bucket sit at the same depth, so the lost page is of the same
    kind as its readable siblings. A lost bucket root has no siblings: it counts
    as a branch when the previous commit's root of that bucket was one. A lost
    leaf's orphans are pages of its sub-buckets, whose names died with it; they
    must not be poured into the parent bucket.
    """
    for sibling in loss.siblings:
        try:
            flags, _count, _ov, _buf = raw.page(sibling, meta.pgid)
        except rawpages.PageError:
            continue
        if flags in (rawpages.FLAG_BRANCH, rawpages.FLAG_LEAF):
            return flags == rawpages.FLAG_BRANCH
    if loss.lo is None and loss.hi is None and older is not None:
        return older.root_flags.get(loss.path) == rawpages.FLAG_BRANCH
    return False


def _adopt_orphans(raw: rawpages.RawFile, meta: rawpages.Meta, walk: rawpages.Walk,
                   older: Optional[rawpages.Walk], report: dict[str, Any]) -> None:
    """Put orphaned leaf pages back where they belong, when that is known.

    An orphan is attributed by the previous commit's tree when that tree still
    reaches it (pages a commit did not touch are shared by both trees);
    otherwise only to a lost branch page whose key range fits all its keys.
    """
    candidates = [loss for loss in walk.losses if loss.pgid is not None]
    branch_level = [loss for loss in candidates if _lost_page_was_branch(raw, meta, loss, older)]
    adopt = raw.freelist(meta) is not None
    if not adopt:
        # without a freelist, free pages (stale versions of records) and orphaned
        # pages look alike: adopting them could bring back deleted or old data
        report["notes"].append("no usable freelist: orphaned leaf pages cannot be told from stale free "
                               "pages, so none are adopted (candidates are listed)")
    reader = rawpages.TolerantReader(raw, meta)
    reader.walk.visited = walk.visited
    orphans = list(rawpages.orphan_leaves(raw, meta, set(walk.visited)))
    # pages of sub-buckets named in orphan leaves belong under those buckets:
    # they are reached through their parent, never adopted on their own
    owned: set[int] = set()
    for _pgid, elements in orphans:
        for flags, _key, value in elements:
            if flags & rawpages.LEAF_FLAG_BUCKET and len(value) >= rawpages.BUCKET_HEADER.size:
                sub_root = rawpages.BUCKET_HEADER.unpack_from(value, 0)[0]
                if sub_root:
                    probe = rawpages.TolerantReader(raw, meta)
                    probe._tree(sub_root, (), rawpages.Bucket(), None, None, 0)
                    owned |= probe.walk.visited
    infos = []
    for pgid, elements in orphans:
        if pgid in owned:
            continue
        first, last = elements[0][1], elements[-1][1]
        known = older.page_path.get(pgid) if older is not None else None
        pool = [loss for loss in candidates if loss.path == known] if known is not None else candidates
        fits = [loss for loss in pool
                if (loss.lo is None or first >= loss.lo) and (loss.hi is None or last < loss.hi)]
        infos.append((pgid, elements, known, fits))
    adoptable = {id(loss) for loss in branch_level}
    for loss in candidates:
        if id(loss) in adoptable or loss.siblings or loss.lo is not None or loss.hi is not None:
            continue
        # a lost bucket root of unknown kind: its orphans are its own leaves when they tile
        # the key space (two or more, disjoint, as a branch's children are); pages of
        # sub-buckets of a lost leaf come from several key spaces and overlap
        spans = sorted((el[0][1], el[-1][1]) for _p, el, known, fits in infos
                       if known is None and any(f is loss for f in fits))
        if len(spans) >= 2 and all(spans[i][1] < spans[i + 1][0] for i in range(len(spans) - 1)):
            adoptable.add(id(loss))
    for pgid, elements, known, fits in infos:
        if pgid in walk.visited:
            continue  # reached through an orphan adopted earlier in this loop
        listed = fits
        if known is None:
            fits = [loss for loss in fits if id(loss) in adoptable]
        paths = {loss.path for loss in fits}
        if len(paths) != 1:
            if listed:
                paths = {loss.path for loss in listed}
                report["ambiguous_orphans"].append({"page": pgid, "buckets": sorted(
                    "/".join(x.decode("utf-8", "backslashreplace") for x in p) for p in paths)})
            continue
        path = paths.pop()
        if not adopt:
            report["ambiguous_orphans"].append({"page": pgid, "buckets": [
                "/".join(x.decode("utf-8", "backslashreplace") for x in path)]})
            continue
        into = _find_bucket(walk.root, path)
        if into is None:
            continue
        walk.visited.add(pgid)
        before = into.count()
        fresh = [e for e in elements if e[1] not in into.values and e[1] not in into.buckets]
        reader.leaf_elements(fresh, path, into, len(path))
        report["recovered_orphans"].append({"page": pgid, "bucket": "/".join(
            x.decode("utf-8", "backslashreplace") for x in path), "entries": into.count() - before})
    walk.losses.extend(reader.walk.losses)


#: bbolt's limits (MaxKeySize, MaxValueSize): larger items only come from damage
MAX_KEY_SIZE = 32768
MAX_VALUE_SIZE = (1 << 31) - 2


def write_tree(path: str, tree: rawpages.Bucket, page_size: int) -> list[str]:
    """Write the recovered tree into a new file in one transaction; returns what could not be written."""
    from .common import engine
    bolt = engine()
    skipped: list[str] = []
    total = tree.count()
    try:
        db = bolt.open(path, create=True, page_size=page_size, freelist="persist")
    except (bolt.BoltError, ValueError):
        # a page size the engine will not create (tiny ones from old files): use the default
        if os.path.exists(path):
            os.unlink(path)
        db = bolt.open(path, create=True, freelist="persist")
    with db, db.begin(write=True) as tx, Progress("writing", total) as bar:
        for name in sorted(tree.buckets):
            if len(name) > MAX_KEY_SIZE:
                skipped.append(f"{_path_text((name[:64],))}: bucket name larger than bbolt allows")
                continue
            try:
                bucket = tx.create_bucket(name)
            except bolt.BoltError as exc:
                skipped.append(f"{_path_text((name,))}: {exc}")
                continue
            _fill(bolt, bucket, tree.buckets[name], (name,), bar, skipped)
    return skipped


def _path_text(path: tuple[bytes, ...]) -> str:
    return "/".join(p.decode("utf-8", "backslashreplace") for p in path)


def _fill(bolt: Any, bucket: Any, node: rawpages.Bucket, path: tuple[bytes, ...], bar: Progress,
          skipped: list[str]) -> None:
    # A damaged file can yield what bbolt would never write (oversized keys or
    # values, a key that is both a value and a bucket); those are skipped and reported.
    if node.sequence:
        bucket.set_sequence(node.sequence)
    values = []
    for key, value in sorted(node.values.items()):
        if key in node.buckets:
            continue
        if len(key) > MAX_KEY_SIZE or len(value) > MAX_VALUE_SIZE:
            skipped.append(f"{_path_text(path + (key[:64],))}: key or value larger than bbolt allows")
            continue
        values.append((key, value))
    for key in sorted(set(node.values) & set(node.buckets)):
        skipped.append(f"{_path_text(path + (key,))}: both a value and a bucket; the value was dropped")
    try:
        bucket.put_many(values)
    except bolt.BoltError:
        for key, value in values:
            try:
                bucket.put(key, value)
            except bolt.BoltError as exc:
                skipped.append(f"{_path_text(path + (key,))}: {exc}")
    bar.advance(len(values))
    for name in sorted(node.buckets):
        try:
            child = bucket.create_bucket(name)
        except bolt.BoltError as exc:
            skipped.append(f"{_path_text(path + (name,))}: {exc}")
            continue
        _fill(bolt, child, node.buckets[name], path + (name,), bar, skipped)
        bar.advance()


def run_salvage(args: argparse.Namespace) -> int:
    if os.path.exists(args.output) and not args.force:
        raise ToolError(f"{args.output}: already exists (use --force to overwrite)")
    if os.path.abspath(args.output) == os.path.abspath(args.db):
        raise ToolError("salvage never overwrites its input; choose another -o")
    _refuse_if_locked(args.db)
    try:
        with open(args.db, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            # map rather than read: damaged files of containerd hosts can be gigabytes
            data = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
    except OSError as exc:
        raise ToolError(f"{args.db}: {exc.strerror or exc}") from exc
    result = recover(data)  # type: ignore[arg-type]
    tree, report = result["tree"], result["report"]
    if tree.values:
        report["notes"].append(f"{len(tree.values)} plain key(s) at the root level are not allowed by bbolt "
                               "and were dropped")
    report["input"] = args.db
    report["output"] = args.output
    if not args.dry_run:
        out_dir = os.path.dirname(os.path.abspath(args.output))
        fd, tmp = tempfile.mkstemp(prefix=".salvage-", suffix=".db", dir=out_dir)
        os.close(fd)
        os.unlink(tmp)
        try:
            report["not_written"] = write_tree(tmp, tree, report["page_size"])
            problems = check.structural_problems(tmp)
            if problems:
                raise ToolError(f"salvaged file failed its check ({problems[0]}); nothing written",
                                EXIT_PROBLEMS)
            atomic_replace(tmp, args.output, keep_backup=False)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    _print_report(report, args.dry_run)
    if args.report:
        with open(args.report, "w", encoding="utf-8") as fh:
            json.dump(report, fh, indent=2)
    return EXIT_PARTIAL if report["lost"] or report["dropped"] or report.get("not_written") else EXIT_OK


def _refuse_if_locked(path: str) -> None:
    """Reading a file containerd is writing would salvage a moving target."""
    import fcntl
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            from ..lockholder import locked_text
            from .common import EXIT_LOCKED
            raise ToolError(locked_text(path), EXIT_LOCKED) from exc
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _print_report(report: dict[str, Any], dry_run: bool) -> None:
    verb = "would write" if dry_run else "wrote"
    print(f"salvage of {report['input']}: page size {report['page_size']}, meta {report['meta_used']} "
          f"(txid {report['txid']})")
    for n in report["notes"]:
        print(f"  note: {n}")
    for o in report["recovered_orphans"]:
        print(f"  recovered {o['entries']} entries from orphaned leaf page {o['page']} into {o['bucket']}")
    for o in report["ambiguous_orphans"]:
        print(f"  orphaned leaf page {o['page']} might belong to {', '.join(o['buckets'])}; not used")
    for line in report["dropped"]:
        print(f"  dropped {line}")
    for line in report.get("not_written", []):
        print(f"  not written: {line}")
    if report["lost"]:
        print(f"  LOST ({len(report['lost'])} damaged page(s) or buckets):")
        for line in report["lost"]:
            print(f"    {line}")
    else:
        print("  nothing lost")
    if report["images"]:
        print("  images recovered: " + ", ".join(f"{ns}: {n}" for ns, n in sorted(report["images"].items())))
    print(f"{verb} {report['entries']} entries to {report['output']}")
