"""``salvage``: recover what a damaged metadata file still holds into a new, valid file.

The damaged file is only read (by rawpages' tolerant reader, never by the
engine, which rightly refuses it). The newest valid meta page is used; when a
meta page is damaged, the commit it named is looked for on the pages
(pagescan.rebuild_metas). Damaged pages are skipped and reported with the
bucket and key range they covered. Unreachable leaf pages the freelist does
not list - children of a damaged branch page - are matched back to the lost
key range they fit; every other unreachable subtree (below a lost meta, root,
``v1``, namespace or record page) is put back where the previous commit's
tree or its containerd shape says (pagescan.place), or else kept in a
``lost+found`` bucket at the root of the output with the reason - never
placed by guessing. Records that lost a required part go to ``lost+found``
too, under their original path. The output is written through the engine in
one transaction, then checked.
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
from typing import Any, Optional

from ..store import layout
from . import check, pagescan, rawpages
from .common import EXIT_OK, EXIT_PARTIAL, EXIT_PROBLEMS, ToolError, stop_point
from .progress import Progress
from .scratch import ScratchFile


#: root-level bucket of the output holding what salvage recovered but could not place
LOST_AND_FOUND = b"lost+found"


#: With one meta page lost, the commit salvage rebuilds cannot be proven the
#: last one containerd completed: pages carry no transaction id, and a commit
#: cut short (its pages written, its meta not) can look whole, or may have
#: rewritten pages of the surviving commit's tree (tests/tools/
#: test_salvage_cut_short.py shows both). The report says so.
UNPROVEN_LAST_COMMIT = ("a meta page is lost, so the commit used cannot be proven the last one containerd "
                        "completed: records written in the last commit before the damage may be missing, or "
                        "may be ones a commit cut short wrote and containerd never committed; compare them "
                        "with a backup if you have one")


def recover(data: bytes, progress: pagescan.ProgressHook = None) -> dict[str, Any]:
    """Read data tolerantly; returns the tree and a structured report.

    progress, when given, is called with (pages scanned, pages in all) during
    the page scans, for a progress display.
    """
    try:
        raw = rawpages.RawFile(data)
    except rawpages.PageError as exc:
        raise ToolError(f"nothing to salvage: {exc}") from exc
    report: dict[str, Any] = {"page_size": raw.page_size, "file_pages": raw.page_count(), "metas": [],
                              "lost": [], "recovered_orphans": [], "ambiguous_orphans": [], "notes": [],
                              "placed": [], "lost_and_found": []}
    for meta in raw.metas:
        report["metas"].append({"slot": meta.slot, "txid": meta.txid, "valid": meta.valid,
                                "problem": meta.problem, "root": meta.root, "pgid": meta.pgid})
    metas = raw.valid_metas()
    for m in raw.metas:
        if not m.valid:
            report["notes"].append(f"meta page {m.slot} is invalid ({m.problem})")
    metas, alternatives = _choose_metas(raw, metas, report)
    if len(raw.valid_metas()) == 1:
        report["notes"].append(UNPROVEN_LAST_COMMIT)
    tries = []
    for i, meta in enumerate(metas[:2]):
        other = metas[1 - i] if len(metas) > 1 else None
        tries.append(_salvage_from(raw, meta, other, progress))
    chosen = tries[0]
    # the previous commit, when the newest lost its root: its records are set aside, not used
    previous: Optional[_Attempt] = None
    if len(tries) > 1 and chosen.root_lost and tries[1].result_count() > chosen.result_count():
        # The previous commit's tree cannot stand in for the newest one. The pages the newest
        # commit freed (its predecessor's root, v1 and namespace pages at least: every commit
        # rewrites them) were free again once it committed, and a later commit cut short (its
        # pages written, its meta not: containerd stopped while committing) may have rewritten
        # them; pages carry no transaction id, so such a rewrite cannot be seen, and reading the
        # previous tree through it brings back records no commit holds, under any name. The
        # pages the newest commit still uses are safe, but every path to them runs through the
        # previous root. So the previous commit's records go to lost-and-found, whole.
        previous = tries[1]
        report["notes"].append(f"meta {chosen.meta.slot} (txid {chosen.meta.txid}) has an unreadable root page; "
                               f"the tree of meta {previous.meta.slot} (txid {previous.meta.txid}) does not stand in "
                               "for it: pages the newest commit freed may have been rewritten since, by a commit "
                               f"cut short, so its records are kept in {LOST_AND_FOUND.decode()}, not in the tree")
    elif len(tries) > 1 and not tries[1].walk.losses and chosen.walk.losses:
        report["notes"].append(f"the previous commit (meta {tries[1].meta.slot}, txid {tries[1].meta.txid}) "
                               "is intact; records are taken from the newest commit")
    if (any(not m.valid for m in raw.metas) and metas[0].problem not in (pagescan.REBUILT, pagescan.PARTIAL)
            and not alternatives):
        # a damaged meta may have named a newer commit that is no longer whole (pages damaged too)
        _keep_newer_pages(raw, chosen, raw.page_count(), "a newer commit whose meta page is damaged")
    meta, walk = chosen.meta, chosen.walk
    report["notes"].extend(chosen.notes)
    report["meta_used"] = meta.slot
    report["txid"] = meta.txid
    report["recovered_orphans"] = chosen.report["recovered_orphans"]
    # orphans the page scan placed or kept are accounted for there
    scanned = chosen.placement.pages if chosen.placement else set()
    report["ambiguous_orphans"] = [o for o in chosen.report["ambiguous_orphans"] if o["page"] not in scanned]
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
    placement = chosen.placement
    report["placed"] = placement.placed if placement else []
    if placement and placement.conflicts:
        report["notes"].append(f"{placement.conflicts} key(s) of unreachable pages were also in the tree; "
                               "the tree's values are kept")
    found = dict(placement.found) if placement else {}
    report["lost_and_found"] = list(placement.lost_and_found) if placement else []
    for alternative in alternatives:
        other_tree = rawpages.TolerantReader(raw, alternative).read().root
        extra = pagescan.difference(other_tree, walk.root)
        if extra.values or extra.buckets:
            name = f"other-commit-root-{alternative.root}"
            found[name] = extra
            never = alternative.problem == pagescan.NEVER_COMMITTED
            report["lost_and_found"].append({
                "name": name, "page": alternative.root,
                "kind": "records of a commit that never completed" if never else "records of another complete commit",
                "entries": extra.count(), "belongs_under": [], "damaged_inside": [],
                "why": ("it was written after another commit newer than the surviving meta, and its meta never "
                        "reached the disk") if never else
                       "a meta page is damaged and this commit's order against the one used is unknown"})
    if previous is not None:
        extra = pagescan.difference(previous.walk.root, walk.root)
        if extra.values or extra.buckets:
            name = f"previous-commit-root-{previous.meta.root}"
            found[name] = extra
            report["lost_and_found"].append({
                "name": name, "page": previous.meta.root, "kind": "records of the previous commit",
                "entries": extra.count(), "belongs_under": [], "damaged_inside": [],
                "why": "the newest commit's root page is lost, and pages it freed may have been rewritten by a "
                       "later commit cut short"})
    _restore_db_version(walk.root, chosen.other_walk, report)
    for text, record, why in set_aside_incomplete_records(walk.root):
        # kept under their original path so the name they had is not lost with them
        pagescan.put_at(found.setdefault("incomplete", rawpages.Bucket()), text, record)
        report["lost_and_found"].append({"name": "incomplete/" + pagescan.path_text(text), "page": None,
                                         "kind": "an incomplete record", "entries": record.count(), "why": why,
                                         "belongs_under": [], "damaged_inside": []})
    report["dropped"] = [f"{d['name']}: {d['why']}; moved to {LOST_AND_FOUND.decode()}"
                         for d in report["lost_and_found"] if d["page"] is None]
    if found:
        shelf = walk.root.buckets.setdefault(LOST_AND_FOUND, rawpages.Bucket())
        for name, bucket in found.items():
            key = name.encode()
            while key in shelf.buckets or key in shelf.values:
                key += b"+"
            shelf.buckets[key] = bucket
    report["images"] = _image_counts(walk.root)
    report["entries"] = walk.root.count()
    return {"tree": walk.root, "report": report}


def _restore_db_version(root: rawpages.Bucket, other: Optional[rawpages.Walk], report: dict[str, Any]) -> None:
    """containerd reads a v1 bucket without ``version`` as schema version 0 and reruns its migrations.

    When the page holding it was lost, the previous commit's value is the one
    evidence left (containerd changes it only when it migrates); it is used
    and said so.
    """
    v1 = root.buckets.get(layout.SCHEMA_BUCKET)
    if v1 is None or layout.DB_VERSION_KEY in v1.values or not v1.buckets:
        return
    prev = other.root.buckets.get(layout.SCHEMA_BUCKET) if other is not None else None
    value = prev.values.get(layout.DB_VERSION_KEY) if prev is not None else None
    if value is not None:
        v1.values[layout.DB_VERSION_KEY] = value
        report["notes"].append("v1/version was on a damaged page; the previous commit's value is written")
    else:
        report["notes"].append("v1/version was on a damaged page and no other commit holds it: containerd will "
                               "take the file for schema version 0 and run its migrations on it")


def _choose_metas(raw: rawpages.RawFile, metas: list[rawpages.Meta],
                  report: dict[str, Any]) -> tuple[list[rawpages.Meta], list[rawpages.Meta]]:
    """The metas to salvage from, newest first, and commits that cannot be ordered against them.

    When a meta page is damaged, the commit it named may still be whole on the
    pages (pagescan.rebuild_metas).
    """
    if len(metas) >= 2:
        return metas, []
    survivor = metas[0] if metas else None
    found, why = pagescan.rebuild_metas(raw, survivor)
    # commits built on another one found newer than the survivor never committed: their records
    # are kept in lost-and-found only
    never = [m for m in found if m.problem == pagescan.NEVER_COMMITTED]
    found = [m for m in found if m.problem != pagescan.NEVER_COMMITTED]
    if never:
        report["notes"].append(f"complete commits on the pages (root pages {', '.join(str(m.root) for m in never)}) "
                               "came after another one newer than the surviving meta, so they never committed "
                               "(their metas would have replaced it); what they hold differently is kept in "
                               "lost-and-found")
    newer = [m for m in found if survivor is None or m.pgid > survivor.pgid]
    if newer and (len(newer) == 1 or newer[0].pgid > newer[1].pgid):
        if newer[0].problem == pagescan.PARTIAL:
            report["notes"].append(
                f"no whole commit is left on the pages: the tree of root page {newer[0].root} (damaged too) is used "
                "and every intact page it does not reach is kept in lost-and-found" if newer[0].root else
                "no root page is left on the pages: every intact page is kept in lost-and-found")
        elif newer[0].freelist == rawpages.NO_FREELIST:
            report["notes"].append(f"the only complete containerd tree on the pages (root page {newer[0].root}) is "
                                   "used; the file keeps no freelist, so nothing proves it is the newest commit")
        else:
            reason = "its high water mark is above the surviving meta's" if survivor else "no other is as high"
            report["notes"].append(f"a complete commit (root page {newer[0].root}, freelist page "
                                   f"{newer[0].freelist}) was found on the pages; {reason}, so it is the newest "
                                   "and is used")
        return [newer[0]] + metas, never
    if not found:
        if not metas:
            raise ToolError(f"nothing to salvage: neither meta page is valid and {why}")
        report["notes"].append(f"no other complete commit could be found on the pages: {why}")
        return metas, never
    # pages carry no transaction id: two complete commits with the same high water mark
    # cannot be ordered. The surviving (or first) one is used; what the other holds
    # differently is kept in lost-and-found, not merged by guess.
    # found lists the one covering the most pages first
    if survivor is None:
        metas, alternatives = [found[0]], found[1:]
    else:
        alternatives = found
    if alternatives:
        roots = ", ".join(str(m.root) for m in alternatives)
        chosen = (f"; root page {metas[0].root} holds the latest createdat/updatedat and is used"
                  if metas[0].freelist == rawpages.NO_FREELIST else "")
        report["notes"].append(f"other complete commits (root pages {roots}) are on the pages and cannot be told "
                               f"older or newer{chosen}; records they hold differently are kept in lost-and-found")
    return metas, alternatives + never


def _keep_newer_pages(raw: rawpages.RawFile, older: "_Attempt", limit: int, why: str) -> None:
    """Salvaging an older commit than the newest: keep what the newer one may have written.

    A newer commit writes past the older one's high water mark (up to limit:
    those pages are certainly its own) and into pages the older one lists
    free (those may also hold old copies). All go to lost-and-found, never
    into the tree; why says which commit.
    """
    free = raw.freelist(older.meta) or set()

    def tree_pages(ids: Any) -> set[int]:
        return {p for p in ids if p not in older.walk.visited and (head := pagescan.header(raw, p)) is not None
                and head[0] in (rawpages.FLAG_BRANCH, rawpages.FLAG_LEAF)}

    hwm = rawpages.Meta(older.meta.slot, raw.page_size, older.meta.root, older.meta.freelist,
                        max(limit, older.meta.pgid), older.meta.txid, True)
    # a copy of visited: pages read here are not part of the tree (the double-free check looks at the tree)
    seen = set(older.walk.visited)
    for pages, reason in ((tree_pages(range(older.meta.pgid, limit)), f"{why} wrote it"),
                          (tree_pages(free), f"{why} may have written it, or it is an old copy")):
        if pages:
            fragments = pagescan.read_fragments(raw, hwm, pages, seen)
            older.placement = pagescan.place(older.walk.root, fragments, [], None, out=older.placement,
                                             stale=reason)


class _Attempt:
    """What one meta's tree yields once unreachable pages are put back."""

    def __init__(self, meta: rawpages.Meta, walk: rawpages.Walk) -> None:
        self.meta = meta
        self.walk = walk
        self.notes: list[str] = []
        self.report: dict[str, Any] = {"recovered_orphans": [], "ambiguous_orphans": [], "notes": []}
        self.placement: Optional[pagescan.Placement] = None
        self.root_lost = False
        #: the other meta's tree, when there is one
        self.other_walk: Optional[rawpages.Walk] = None

    def result_count(self) -> int:
        return self.walk.root.count()


def _salvage_from(raw: rawpages.RawFile, meta: rawpages.Meta, other: Optional[rawpages.Meta],
                  progress: pagescan.ProgressHook) -> _Attempt:
    walk = rawpages.TolerantReader(raw, meta).read()
    attempt = _Attempt(meta, walk)
    older_walk = None
    if other is not None:
        older_walk = rawpages.TolerantReader(raw, other).read()
    attempt.other_walk = older_walk
    if not walk.losses:
        return attempt
    _adopt_orphans(raw, meta, walk, older_walk, attempt.report)
    attempt.notes.extend(attempt.report["notes"])
    older_meta = other if other is not None and other.txid < meta.txid else None
    unreached = pagescan.unreached_pages(raw, meta, walk.visited, older_meta, progress)
    if unreached.note:
        attempt.notes.append(unreached.note)
    fragments = pagescan.read_fragments(raw, meta, unreached.pages, walk.visited)
    placement = pagescan.place(walk.root, fragments, walk.losses, older_walk,
                               lambda loss: _lost_page_was_branch(raw, meta, loss, older_walk))
    if unreached.stale_maybe:
        # without a freelist, what is left may be old copies of records; nothing intact is thrown
        # away, but none of it is put in the tree
        maybe = pagescan.read_fragments(raw, meta, unreached.stale_maybe, set(walk.visited))
        pagescan.place(walk.root, maybe, [], None, stale="it may be an old copy: without the freelist, pages "
                       "freed by earlier commits cannot be told from pages the damage cut off", out=placement)
    walk.losses.extend(placement.losses)
    attempt.placement = placement
    attempt.root_lost = (any(loss.path == () and loss.pgid == meta.root for loss in walk.losses)
                         and not walk.root.buckets and not walk.root.values)
    return attempt


def _image_counts(root: rawpages.Bucket) -> dict[str, int]:
    v1 = root.buckets.get(layout.SCHEMA_BUCKET)
    out: dict[str, int] = {}
    for ns_name, ns in (v1.buckets.items() if v1 else []):
        images = ns.buckets.get(layout.IMAGES_BUCKET)
        out[ns_name.decode("utf-8", "backslashreplace")] = len(images.buckets) if images else 0
    return out


def set_aside_incomplete_records(root: rawpages.Bucket) -> list[tuple[pagescan.BucketPath, rawpages.Bucket, str]]:
    """Take out containerd records that lost a required part with a damaged page.

    containerd's image reader fails the whole Images/List when one image has
    no target bucket, so a half-recovered image would hide every image of its
    namespace; a blob record without a size would report a wrong size. Such
    records leave the tree; the caller keeps them in lost-and-found.
    Returns (original path, record, why) for each.
    """
    out: list[tuple[pagescan.BucketPath, rawpages.Bucket, str]] = []
    v1 = root.buckets.get(layout.SCHEMA_BUCKET)
    if v1 is None:
        return out
    for ns_name, ns in v1.buckets.items():
        images = ns.buckets.get(layout.IMAGES_BUCKET)
        for name, img in list(images.buckets.items()) if images else []:
            target = img.buckets.get(layout.TARGET_BUCKET)
            ok = (target is not None and target.values.get(layout.DIGEST_KEY)
                  and target.values.get(layout.MEDIA_TYPE_KEY) and layout.SIZE_KEY in target.values)
            if not ok:
                del images.buckets[name]
                out.append(((layout.SCHEMA_BUCKET, ns_name, layout.IMAGES_BUCKET, name), img,
                            "image record incomplete (its target was on a damaged page)"))
        content = ns.buckets.get(layout.CONTENT_BUCKET)
        blobs = content.buckets.get(layout.BLOB_BUCKET) if content else None
        for digest, blob in list(blobs.buckets.items()) if blobs else []:
            if layout.SIZE_KEY not in blob.values:
                del blobs.buckets[digest]
                out.append(((layout.SCHEMA_BUCKET, ns_name, layout.CONTENT_BUCKET, layout.BLOB_BUCKET, digest), blob,
                            "blob record incomplete (its size was on a damaged page)"))
    return out


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
    # without a freelist, free pages (stale versions of records) and orphaned pages
    # look alike: adopting them could bring back deleted or old data. The page scan
    # (pagescan.unreached_pages) says which of them it can still use, and why.
    reader = rawpages.TolerantReader(raw, meta)
    reader.walk.visited = walk.visited
    orphans = list(rawpages.orphan_leaves(raw, meta, set(walk.visited)))
    # pages of sub-buckets named in orphan leaves belong under those buckets:
    # they are reached through their parent, never adopted on their own
    owned: set[int] = set()
    # leaves below an unreachable branch belong with that branch (a subtree the
    # page scan places as a whole), never on their own
    free = raw.freelist(meta) or set()
    for pgid in range(2, min(meta.pgid, raw.page_count())):
        head = pagescan.header(raw, pgid)
        if head is not None and head[0] == rawpages.FLAG_BRANCH and pgid not in walk.visited and pgid not in free:
            owned.update(pagescan.children(raw, pgid, meta.pgid))
    for _pgid, elements in orphans:
        for flags, _key, value in elements:
            sub_root = rawpages.sub_bucket_root(flags, value)
            if sub_root:
                owned |= rawpages.TolerantReader(raw, meta).read_subtree(sub_root, rawpages.Bucket()).visited
    infos = []
    for pgid, elements in orphans:
        if pgid in owned:
            continue
        first, last = elements[0][1], elements[-1][1]
        known = older.page_path.get(pgid) if older is not None else None
        pool = [loss for loss in candidates if loss.path == known] if known is not None else candidates
        # a leaf of plain values a bucket cannot hold (the root, containerd's namespace, images,
        # blob... buckets, or other keys than a record's) is no part of it: with a sub-bucket's own
        # root lost too, its leaves fit the key range of such a bucket's lost page all the same
        plain = [key for flags, key, _value in elements if not flags & rawpages.LEAF_FLAG_BUCKET]
        fits = [loss for loss in pool
                if (loss.lo is None or first >= loss.lo) and (loss.hi is None or last < loss.hi)
                and pagescan.admits_values(loss.path, plain)]
        infos.append((pgid, elements, known, fits))
    # a lost bucket root of unknown kind is left to the page scan, which knows
    # containerd's shapes (pagescan.place): orphans tiling its key space may be
    # whole sub-buckets of different kinds, not its own leaves
    adoptable = {id(loss) for loss in branch_level}
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
        into = pagescan.find(walk.root, path)
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


def write_tree(path: str, tree: rawpages.Bucket, page_size: int, freelist: str = "persist") -> list[str]:
    """Write the recovered tree into a new file in one transaction; returns what could not be written.

    freelist is the engine's freelist mode ("no-sync" writes a file the way containerd 1.7+ keeps it).
    """
    from .common import engine
    bolt = engine()
    skipped: list[str] = []
    total = tree.count()
    try:
        db = bolt.open(path, create=True, page_size=page_size, freelist=freelist)
    except (bolt.BoltError, ValueError):
        # a page size the engine will not create (tiny ones from old files): use the default
        # (truncate, not unlink: the path may be an unnamed scratch file's /proc/self/fd link)
        if os.path.exists(path):
            os.truncate(path, 0)
        db = bolt.open(path, create=True, freelist=freelist)
    with db, db.begin(write=True) as tx, Progress("writing", total) as bar:
        for name in sorted(tree.buckets):
            if len(name) > MAX_KEY_SIZE:
                skipped.append(f"{pagescan.path_text((name[:64],))}: bucket name larger than bbolt allows")
                continue
            try:
                bucket = tx.create_bucket(name)
            except bolt.BoltError as exc:
                skipped.append(f"{pagescan.path_text((name,))}: {exc}")
                continue
            _fill(bolt, bucket, tree.buckets[name], (name,), bar, skipped)
    return skipped


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
            skipped.append(f"{pagescan.path_text(path + (key[:64],))}: key or value larger than bbolt allows")
            continue
        values.append((key, value))
    for key in sorted(set(node.values) & set(node.buckets)):
        skipped.append(f"{pagescan.path_text(path + (key,))}: both a value and a bucket; the value was dropped")
    try:
        bucket.put_many(values)
    except bolt.BoltError:
        for key, value in values:
            try:
                bucket.put(key, value)
            except bolt.BoltError as exc:
                skipped.append(f"{pagescan.path_text(path + (key,))}: {exc}")
    bar.advance(len(values))
    for name in sorted(node.buckets):
        try:
            child = bucket.create_bucket(name)
        except bolt.BoltError as exc:
            skipped.append(f"{pagescan.path_text(path + (name,))}: {exc}")
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
    with Progress("scanning", unit="pages") as bar:
        def on_pages(done: int, total: int) -> None:
            # each scan pass reports from its start: the bar follows the pass under way
            bar.total = total
            bar.advance(done - bar.done)
        result = recover(data, on_pages)  # type: ignore[arg-type]
    tree, report = result["tree"], result["report"]
    if tree.values:
        report["notes"].append(f"{len(tree.values)} plain key(s) at the root level are not allowed by bbolt "
                               "and were dropped")
    report["input"] = args.db
    report["output"] = args.output
    if not args.dry_run:
        # an unnamed file until it passed its check: a killed or failed salvage leaves nothing
        with ScratchFile(os.path.dirname(os.path.abspath(args.output))) as scratch:
            report["not_written"] = write_tree(scratch.path, tree, report["page_size"])
            stop_point("salvage-written")
            problems = check.structural_problems(scratch.path)
            if problems:
                raise ToolError(f"salvaged file failed its check ({problems[0]}); nothing written",
                                EXIT_PROBLEMS)
            scratch.replace(args.output)
    _print_report(report, args.dry_run)
    if args.report:
        with open(args.report, "w", encoding="utf-8") as fh:
            json.dump(report, fh, indent=2)
    partial = report["lost"] or report["lost_and_found"] or report.get("not_written")
    return EXIT_PARTIAL if partial else EXIT_OK


def _refuse_if_locked(path: str) -> None:
    """Reading a file containerd is writing would salvage a moving target."""
    from ..lockholder import is_locked, locked_text
    from .common import EXIT_LOCKED
    if is_locked(path):
        raise ToolError(locked_text(path), EXIT_LOCKED)


#: lost-and-found items printed one by one; larger groups of the same kind and reason get one line
ITEMS_SHOWN = 3


def _print_grouped(items: list[dict[str, Any]]) -> None:
    """One line per item, or per group of alike items: a truncated big file leaves thousands."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for item in items:
        groups.setdefault((item["kind"], item["why"], tuple(item["belongs_under"])), []).append(item)
    for (kind, why, under), group in groups.items():
        where = f"; belongs under {', '.join(under)}" if under else ""
        if len(group) <= ITEMS_SHOWN:
            for item in group:
                page = f"page {item['page']}: " if item["page"] is not None else ""
                print(f"    {item['name']}: {page}{kind}, {item['entries']} entries: {why}{where}")
            continue
        pages = [item["page"] for item in group if item["page"] is not None]
        span = f" (pages {min(pages)}..{max(pages)})" if pages else ""
        print(f"    {len(group)} x {kind}{span}, {sum(i['entries'] for i in group)} entries in all: {why}{where}")


def _print_report(report: dict[str, Any], dry_run: bool) -> None:
    verb = "would write" if dry_run else "wrote"
    print(f"salvage of {report['input']}: page size {report['page_size']}, meta {report['meta_used']} "
          f"(txid {report['txid']})")
    for n in report["notes"]:
        print(f"  note: {n}")
    for o in report["recovered_orphans"]:
        print(f"  recovered {o['entries']} entries from orphaned leaf page {o['page']} into {o['bucket']}")
    ambiguous = report["ambiguous_orphans"]
    for o in ambiguous[:ITEMS_SHOWN]:
        print(f"  orphaned leaf page {o['page']} might belong to {', '.join(o['buckets']) or '?'}; not used")
    if len(ambiguous) > ITEMS_SHOWN:
        print(f"  ... and {len(ambiguous) - ITEMS_SHOWN} more orphaned leaf pages not used (see the --report file)")
    for p in report["placed"]:
        print(f"  put back {p['entries']} entries of unreachable page {p['page']} into {p['bucket']}: {p['why']}")
    if report["lost_and_found"]:
        print(f"  {LOST_AND_FOUND.decode()}: {len(report['lost_and_found'])} item(s) recovered but not placed "
              "(each is listed in the --report file):")
        _print_grouped(report["lost_and_found"])
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
