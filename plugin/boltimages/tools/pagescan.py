"""Finding and placing what a tree walk of a damaged bbolt file could not reach.

When a meta, a bucket's root page or a branch page is lost, the pages below it
are still on disk, intact but unreachable. This module scans every page,
groups the unreachable pages of the commit being salvaged into subtrees
("fragments"), and puts each one back where its content says it belongs:

1. where the other meta's tree (the previous commit) holds one of its pages -
   a page a commit did not rewrite keeps its place in the tree; or
2. where its shape says (a namespace bucket holds ``images``/``content``/...,
   an image bucket holds ``target``/``createdat``..., a blob record holds
   ``size``...) and exactly one damaged page of the walked tree left a hole
   of that kind and key range.

Anything else goes to a lost-and-found list with the reason and the places it
might belong to; nothing is placed by guessing. Page ids, offsets and lengths
are all checked by rawpages before use.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Optional

from ..store import codec, layout
from . import rawpages
from .rawpages import Bucket, Loss, Meta, PageError, RawFile, Walk

BucketPath = tuple[bytes, ...]
#: a place in containerd's layout; None stands for a name only the parent's page knew
Pattern = tuple[Optional[bytes], ...]
#: called with (pages done, pages in all) while scanning, for a progress display
ProgressHook = Optional[Callable[[int, int], None]]

#: Meta.problem of a meta rebuilt from the pages
REBUILT = "rebuilt from its pages"
#: Meta.problem of a meta standing in for a commit no longer whole on the pages
PARTIAL = "stands in for a commit not whole on the pages"
#: Meta.problem of a commit found whole on the pages that was built on another one found there:
#: it came two commits after the survivor at least, so it never committed (see rebuild_metas)
NEVER_COMMITTED = "built on another commit after the surviving one, so it never committed"
#: how many whole trees a file without metas and freelist may offer (old roots survive in free pages)
MAX_UNPROVEN_ROOTS = 8
#: how many freelist pages a meta rebuild tries at most (stale freelist pages of old commits)
MAX_FREELIST_CANDIDATES = 64


def path_text(path: BucketPath) -> str:
    return "/".join(p.decode("utf-8", "backslashreplace") for p in path) or "(root)"


# --- pages, and commits rebuilt from them --------------------------------------------

def header(raw: RawFile, pgid: int) -> Optional[tuple[int, int, int]]:
    """(flags, count, overflow) when page pgid carries its own id, else None."""
    offset = pgid * raw.page_size
    if offset + rawpages.PAGE_HEADER_SIZE > len(raw.data):
        return None
    pid, flags, count, overflow = rawpages.PAGE_HEADER.unpack_from(raw.data, offset)
    return (flags, count, overflow) if pid == pgid else None


def _freelist_ids(raw: RawFile, pgid: int, hwm: int) -> Optional[tuple[set[int], int]]:
    meta = Meta(0, raw.page_size, 0, pgid, hwm, 0, True)
    ids = raw.freelist(meta)
    head = header(raw, pgid)
    if ids is None or head is None:
        return None
    return ids, head[2]


def children(raw: RawFile, pgid: int, hwm: int) -> list[int]:
    """Pages a tree page points at (branch children, roots of sub-buckets); [] when unreadable."""
    try:
        flags, count, _ov, buf = raw.page(pgid, hwm)
        if flags == rawpages.FLAG_BRANCH:
            return [child for _key, child in rawpages.parse_branch(buf, count)]
        if flags != rawpages.FLAG_LEAF:
            return []
        roots = (rawpages.sub_bucket_root(eflags, value) for eflags, _key, value in rawpages.parse_leaf(buf, count))
        return [root for root in roots if root]
    except PageError:
        return []


def rebuild_metas(raw: RawFile, survivor: Optional[Meta]) -> tuple[list[Meta], str]:
    """Commits other than `survivor` found whole on the pages, highest high water mark first.

    A commit of a file that keeps its freelist leaves a freelist page F and a
    root page R such that R's tree, F's run, F's ids and the two metas cover
    the pages [0, N) exactly once each. Pages carry no transaction id, so the
    commit just before the survivor passes this test as well as the one just
    after it; only a higher N (bbolt never lowers the high water mark) proves
    a commit newer, a lower one proves it older (those are left out). Files
    kept without a freelist (containerd 1.7+) cannot be checked this way.

    A commit cut short (its pages written, its meta not) is as whole on the
    pages as a committed one. Next to a survivor of txid t only t + 1 can have
    committed: t + 2 would have written its meta over the survivor's slot. So
    of two commits found newer than the survivor, one built on the other (its
    tree reaching pages the other wrote, which the survivor's tree does not
    hold) and with a higher N came later and never committed: its meta says
    NEVER_COMMITTED. Pages written past a commit's N therefore do not prove it
    older when a survivor is known: they may be such a commit's.
    Returns (metas, a sentence for the report when there are none).
    """
    n = raw.page_count()
    heads = {p: h for p in range(2, n) if (h := header(raw, p)) is not None}
    survivor_free = raw.freelist(survivor) if survivor is not None else None
    freelists = []
    for pgid, (flags, _count, _ov) in heads.items():
        if flags != rawpages.FLAG_FREELIST:
            continue
        if survivor is not None:
            if pgid == survivor.freelist:
                continue
            # another commit's freelist lies where the survivor has free space (or past it)
            if pgid < survivor.pgid and (survivor_free is None or pgid not in survivor_free):
                continue
        freelists.append(pgid)
    referrers: dict[int, list[int]] = {}
    tree_pages = [p for p, h in heads.items() if h[0] in (rawpages.FLAG_BRANCH, rawpages.FLAG_LEAF)]
    for pgid in tree_pages:
        for child in children(raw, pgid, n):
            referrers.setdefault(child, []).append(pgid)
    # bbolt never lowers the high water mark: every page a commit's successors wrote lies below theirs
    last_written = max((p + h[2] for p, h in heads.items()
                        if h[0] in (rawpages.FLAG_BRANCH, rawpages.FLAG_LEAF, rawpages.FLAG_FREELIST)), default=0)
    if not freelists:
        if survivor is None:
            whole = _unproven_roots(raw, tree_pages)
            return whole if whole[0] else _unproven_roots(raw, tree_pages, whole=False)
        return [], "no freelist page of another commit is on disk"
    freelists = freelists[-MAX_FREELIST_CANDIDATES:]
    found: list[Meta] = []
    # id of a found meta -> the tree pages its walk reached
    reached: dict[int, set[int]] = {}
    for fl in freelists:
        got = _freelist_ids(raw, fl, n)
        if got is None:
            continue
        free, overflow = got
        if any(p < 2 or p >= n for p in free):
            continue
        run = set(range(fl, fl + overflow + 1))
        roots = [p for p in tree_pages if p not in free and p not in run
                 and all(r in free for r in referrers.get(p, ()))]
        for root in roots[:8]:
            candidate = Meta(survivor.slot ^ 1 if survivor else 0, raw.page_size, root, fl, n,
                             survivor.txid if survivor else 0, True, REBUILT)
            walk = rawpages.TolerantReader(raw, candidate).read()
            if walk.losses or walk.shared:
                continue
            used = walk.visited | free | run | {0, 1}
            if len(walk.visited) + len(free) + len(run) + 2 != len(used):
                continue  # overlapping: not one commit's state
            top = max(used) + 1
            if used != set(range(top)):
                continue
            if top <= last_written and survivor is None:
                continue  # a page past its high water mark was written later: an older commit
            if survivor is not None and (top < survivor.pgid or root == survivor.root):
                continue
            candidate.pgid = top
            found.append(candidate)
            reached[id(candidate)] = walk.visited
    found.sort(key=lambda m: -m.pgid)
    if survivor is not None and len(found) > 1:
        _mark_never_committed(raw, survivor, found, reached)
    if not found and survivor is None:
        whole = _unproven_roots(raw, tree_pages)
        return whole if whole[0] else _unproven_roots(raw, tree_pages, whole=False)
    return found, "" if found else "no freelist page and root page on disk cover the file exactly"


def _mark_never_committed(raw: RawFile, survivor: Meta, found: list[Meta], reached: dict[int, set[int]]) -> None:
    """Mark the commits found on the pages that came after another one found there (NEVER_COMMITTED).

    Two of them newer than the survivor sharing a tree page the survivor's
    tree does not hold are one built on the other (both start from the
    survivor's tree, and a page written after it holds the node of the commit
    that wrote it); bbolt never lowers the high water mark, so the one with
    the higher N is the later. With equal N the order is unknown and neither
    is marked.
    """
    kept = rawpages.TolerantReader(raw, survivor).read().visited
    for later in found:
        for earlier in found:
            if (survivor.pgid < earlier.pgid < later.pgid
                    and (reached[id(later)] & reached[id(earlier)]) - kept):
                later.problem = NEVER_COMMITTED
                break


def _unproven_roots(raw: RawFile, tree_pages: list[int], whole: bool = True) -> tuple[list[Meta], str]:
    """Whole containerd trees on a file without metas and without a freelist (containerd 1.7+).

    A root leaf holds the ``v1`` bucket, with its schema ``version``, and reads
    without a loss. Old roots whose pages were not reused pass too, and no
    page says which commit is newest: the tree holding the latest
    ``createdat``/``updatedat`` comes first (a commit that only deleted
    records cannot be told this way; the caller says so and keeps what the
    others hold differently). With whole False, trees with damaged pages count
    too (their metas say PARTIAL), and when no root is left at all, an empty
    one stands in: then everything intact goes to lost-and-found.
    """
    n = raw.page_count()
    found = []
    for pgid in tree_pages:
        try:
            flags, count, _ov, buf = raw.page(pgid, n)
            keys = {key for eflags, key, _v in rawpages.parse_leaf(buf, count)
                    if eflags & rawpages.LEAF_FLAG_BUCKET} if flags == rawpages.FLAG_LEAF else set()
        except PageError:
            continue
        if V1 not in keys:
            continue
        candidate = Meta(0, raw.page_size, pgid, rawpages.NO_FREELIST, n, 0, True, REBUILT if whole else PARTIAL)
        walk = rawpages.TolerantReader(raw, candidate).read()
        v1 = walk.root.buckets.get(V1)
        damaged = bool(walk.losses or walk.shared)
        if (whole and damaged) or v1 is None or (classify(v1) is not SCHEMA and not (damaged and v1.buckets)):
            continue
        found.append(((_latest_time(walk.root), -len(walk.losses)), candidate))
        if len(found) >= MAX_UNPROVEN_ROOTS:
            break
    found.sort(key=lambda f: f[0], reverse=True)
    if not found and not whole:
        return [Meta(0, raw.page_size, 0, rawpages.NO_FREELIST, n, 0, True, PARTIAL)], ""
    return [m for _when, m in found], "" if found else "no freelist page and no whole tree is on the pages"


def _latest_time(bucket: Bucket) -> tuple[int, int]:
    """The latest createdat/updatedat in a tree, as (seconds, nanoseconds); (0, 0) when none decodes."""
    latest = (0, 0)
    for key, value in bucket.values.items():
        if key in (layout.CREATED_AT_KEY, layout.UPDATED_AT_KEY):
            try:
                when = codec.decode_time(value)
            except codec.CodecError:
                continue
            latest = max(latest, (when.seconds, when.nanos))
    for sub in bucket.buckets.values():
        latest = max(latest, _latest_time(sub))
    return latest


def difference(other: Bucket, base: Bucket) -> Bucket:
    """The part of other that base lacks or holds with another value (empty buckets left out)."""
    out = Bucket(other.sequence)
    for key, value in other.values.items():
        if base.values.get(key) != value:
            out.values[key] = value
    for key, sub in other.buckets.items():
        mine = base.buckets.get(key)
        if mine is None:
            out.buckets[key] = sub
            continue
        diff = difference(sub, mine)
        if diff.values or diff.buckets:
            out.buckets[key] = diff
    return out


# --- which unreachable pages belong to the commit ---------------------------

@dataclass
class Unreached:
    """Unreachable tree pages of the salvaged commit, and ones that may be stale."""

    pages: set[int]
    stale_maybe: set[int]
    note: str = ""


def unreached_pages(raw: RawFile, meta: Meta, visited: set[int], older: Optional[Meta],
                    progress: ProgressHook = None) -> Unreached:
    """Leaf and branch pages of meta's commit that no walk reached.

    With the commit's freelist, every page it does not list and no tree
    reaches was cut off by damage. Without it, free pages (old versions of
    records) look the same; only pages at or past the previous commit's high
    water mark are certainly the newest commit's (it wrote them), the others
    are only reported.
    """
    limit = min(meta.pgid, raw.page_count())
    skip = set(visited) | {0, 1}
    free = raw.freelist(meta)
    if free is not None:
        head = header(raw, meta.freelist)
        skip |= set(range(meta.freelist, meta.freelist + (head[2] if head else 0) + 1))
    pages: set[int] = set()
    pgid = 2
    while pgid < limit:
        if progress is not None and pgid % 4096 == 0:
            progress(pgid, limit)
        head = header(raw, pgid) if pgid not in skip else None
        if head is None or head[0] not in (rawpages.FLAG_BRANCH, rawpages.FLAG_LEAF):
            pgid += 1
            continue
        pages.add(pgid)
        pgid += head[2] + 1
    if free is not None:
        return Unreached(pages - free, set())
    if older is not None and older.txid < meta.txid and older.pgid <= meta.pgid:
        new = {p for p in pages if p >= older.pgid}
        note = ("" if new == pages else
                f"the freelist is unreadable: {len(pages - new)} unreachable page(s) below page {older.pgid} "
                "cannot be told from stale free pages: they go to lost-and-found, not into the tree")
        return Unreached(new, pages - new, note)
    return Unreached(set(), pages, "no usable freelist: unreachable pages cannot be told from stale "
                                   "free pages: they go to lost-and-found, not into the tree")


# --- containerd shapes -------------------------------------------------------

@dataclass(frozen=True)
class Shape:
    kind: str
    pattern: Pattern


V1 = layout.SCHEMA_BUCKET
ROOT = Shape("the root bucket", ())
SCHEMA = Shape("containerd's v1 bucket", (V1,))
NAMESPACE = Shape("a namespace bucket", (V1, None))
IMAGES = Shape("an images bucket", (V1, None, layout.IMAGES_BUCKET))
IMAGE = Shape("an image record", (V1, None, layout.IMAGES_BUCKET, None))
CONTENT = Shape("a content bucket", (V1, None, layout.CONTENT_BUCKET))
BLOBS = Shape("a content blob bucket", (V1, None, layout.CONTENT_BUCKET, layout.BLOB_BUCKET))
BLOB = Shape("a content blob record", (V1, None, layout.CONTENT_BUCKET, layout.BLOB_BUCKET, None))
LEASES = Shape("a leases bucket", (V1, None, layout.LEASES_BUCKET))
LEASE = Shape("a lease record", (V1, None, layout.LEASES_BUCKET, None))

NAMESPACE_KEYS = {layout.IMAGES_BUCKET, layout.CONTENT_BUCKET, layout.LEASES_BUCKET, layout.NS_LABELS_BUCKET,
                  layout.CONTAINERS_BUCKET, layout.SNAPSHOTS_BUCKET, layout.SANDBOXES_BUCKET}
IMAGE_KEYS = {layout.TARGET_BUCKET, layout.CREATED_AT_KEY, layout.UPDATED_AT_KEY, layout.LABELS_BUCKET,
              layout.ANNOTATIONS_BUCKET}
BLOB_KEYS = {layout.SIZE_KEY, layout.CREATED_AT_KEY, layout.UPDATED_AT_KEY, layout.LABELS_BUCKET}
LEASE_KEYS = {layout.CREATED_AT_KEY, layout.LABELS_BUCKET, layout.LEASE_CONTENT_BUCKET,
              layout.LEASE_SNAPSHOTS_BUCKET, layout.LEASE_INGESTS_BUCKET, layout.LEASE_IMAGES_BUCKET}
COLLECTIONS = {IMAGE: IMAGES, BLOB: BLOBS, LEASE: LEASES, NAMESPACE: SCHEMA}
#: buckets whose entries are all sub-buckets (never a plain value): bbolt's root bucket, and these
#: of containerd's
BUCKETS_ONLY = (ROOT, NAMESPACE, IMAGES, CONTENT, BLOBS, LEASES)
#: containerd buckets that hold plain values, and the keys they hold them under
PLAIN_KEYS = {SCHEMA: {layout.DB_VERSION_KEY}, IMAGE: IMAGE_KEYS, BLOB: BLOB_KEYS, LEASE: LEASE_KEYS}


def classify(bucket: Bucket) -> Optional[Shape]:
    """What part of containerd's layout this bucket content is, or None when it does not say."""
    keys = set(bucket.values) | set(bucket.buckets)
    if not keys:
        return None
    if V1 in bucket.buckets:
        return ROOT
    if layout.DB_VERSION_KEY in bucket.values and set(bucket.values) == {layout.DB_VERSION_KEY}:
        return SCHEMA
    if layout.TARGET_BUCKET in bucket.buckets and keys <= IMAGE_KEYS:
        return IMAGE
    if layout.SIZE_KEY in bucket.values and keys <= BLOB_KEYS:
        return BLOB
    if layout.CREATED_AT_KEY in bucket.values and keys <= LEASE_KEYS and not keys & {layout.SIZE_KEY}:
        return LEASE
    if bucket.values:
        return None
    if keys <= {layout.BLOB_BUCKET, layout.INGESTS_BUCKET} and layout.BLOB_BUCKET in keys:
        return CONTENT
    if keys <= NAMESPACE_KEYS and keys - {layout.NS_LABELS_BUCKET}:
        return NAMESPACE
    # sub-buckets whose own pages are lost come back empty: they do not say anything
    kinds = {classify(sub) for sub in bucket.buckets.values() if sub.values or sub.buckets}
    if len(kinds) == 1:
        return COLLECTIONS.get(kinds.pop())  # type: ignore[arg-type]
    return None


# --- fragments and their places ----------------------------------------------

@dataclass
class Fragment:
    """A subtree no walk reached, read from its topmost unreachable page."""

    pgid: int
    content: Bucket
    #: page id -> bucket path relative to the fragment
    page_path: dict[int, BucketPath]
    losses: list[Loss]
    shape: Optional[Shape] = None

    def key_range(self) -> tuple[Optional[bytes], Optional[bytes]]:
        keys = sorted(set(self.content.values) | set(self.content.buckets))
        return (keys[0], keys[-1]) if keys else (None, None)


@dataclass
class Placement:
    placed: list[dict] = field(default_factory=list)
    lost_and_found: list[dict] = field(default_factory=list)
    #: fragments that go to lost-and-found, by the name they get there
    found: dict[str, Bucket] = field(default_factory=dict)
    #: losses inside placed fragments, with their real paths
    losses: list[Loss] = field(default_factory=list)
    #: every page read into a fragment (placed or not)
    pages: set[int] = field(default_factory=set)
    conflicts: int = 0


class _Overlay(set):
    """The pages one fragment read, seen together with the pages read before it."""

    def __init__(self, base: set[int]) -> None:
        super().__init__()
        self.base = base

    def __contains__(self, pgid: object) -> bool:
        return super().__contains__(pgid) or pgid in self.base


def read_fragments(raw: RawFile, meta: Meta, unreached: set[int], visited: set[int]) -> list[Fragment]:
    """Group unreachable pages into subtrees, each read from its topmost page.

    A page is a top when no other unreachable page points at it; a top can
    still lie below another one through a page outside the set (a live page
    below the previous commit's high water mark), so fragments found inside
    another fragment are dropped. visited gains every page read.
    """
    pointed: set[int] = set()
    for pgid in unreached:
        pointed.update(children(raw, pgid, meta.pgid))
    tops = sorted(p for p in unreached if p not in pointed and p not in visited)
    read: list[tuple[Fragment, set[int]]] = []
    for top in tops:
        reader = rawpages.TolerantReader(raw, meta)
        reader.walk.visited = _Overlay(visited)
        content = Bucket()
        reader.read_subtree(top, content)
        pages = set(reader.walk.visited)
        read.append((Fragment(top, content, dict(reader.walk.page_path), list(reader.walk.losses)), pages))
    # biggest first, and a fragment whose top another kept one already read is dropped: stale
    # pages can point at each other both ways, and one of the two must still be kept
    read.sort(key=lambda item: (-len(item[1]), item[0].pgid))
    taken: set[int] = set()
    fragments = []
    for fragment, pages in read:
        if fragment.pgid in taken:
            continue
        taken |= pages
        visited |= pages
        if fragment.content.values or fragment.content.buckets:
            fragments.append(fragment)
    fragments.sort(key=lambda f: f.pgid)
    return fragments


def admits_values(path: BucketPath, keys: Iterable[bytes]) -> bool:
    """Whether the bucket at path can hold plain values under these keys.

    bbolt's root and containerd's namespace, images, content, blob and leases
    buckets hold sub-buckets only (BUCKETS_ONLY); v1 and containerd's records
    hold plain values under a few known keys (PLAIN_KEYS). Elsewhere anything
    goes.
    """
    keys = set(keys)
    if not keys:
        return True
    if any(_matches(kind.pattern, path) for kind in BUCKETS_ONLY):
        return False
    for kind, allowed in PLAIN_KEYS.items():
        if _matches(kind.pattern, path):
            return keys <= allowed
    return True


def _matches(pattern: Pattern, path: BucketPath) -> bool:
    return len(pattern) == len(path) and all(p is None or p == q for p, q in zip(pattern, path))


def find(root: Bucket, path: BucketPath) -> Optional[Bucket]:
    node: Optional[Bucket] = root
    for part in path:
        node = node.buckets.get(part) if node is not None else None
    return node


def _ensure(root: Bucket, path: BucketPath) -> Bucket:
    node = root
    for part in path:
        node = node.buckets.setdefault(part, Bucket())
    return node


def _by_older_tree(fragment: Fragment, older: Optional[Walk]) -> tuple[set[BucketPath], Optional[int]]:
    """Places the previous commit's tree implies: a page it holds at A, found at relative path r."""
    bases: set[BucketPath] = set()
    witness = None
    if older is None:
        return bases, witness
    for pgid, rel in fragment.page_path.items():
        where = older.page_path.get(pgid)
        if where is None or len(where) < len(rel) or where[len(where) - len(rel):] != rel:
            continue
        bases.add(where[:len(where) - len(rel)])
        witness = pgid
    return bases, witness


def _explains(hole: Loss, base: BucketPath) -> bool:
    """Whether content placed at base could have been cut off by the damaged page of hole."""
    depth = len(hole.path)
    if base[:depth] != hole.path:
        return False
    if len(base) == depth:
        return True
    # below a lost page: the name must lie in the key range that page covered
    return _in_range(base[depth], hole)


def _in_range(key: Optional[bytes], loss: Loss) -> bool:
    return key is not None and (loss.lo is None or key >= loss.lo) and (loss.hi is None or key < loss.hi)


def _cut_off(hole: Loss) -> bool:
    """Whether the page was lost to truncation.

    A truncation takes a branch's neighbours with it (writers put a branch
    right after its children), so subtrees near a cut-off branch may be
    sub-buckets of a cut-off leaf as well as its own parts: content that does
    not say what it is is not placed there.
    """
    return "truncated" in hole.reason


def _interleaves(bucket: Optional[Bucket], first: Optional[bytes], last: Optional[bytes]) -> bool:
    """Whether bucket already holds a key within [first, last].

    The pages of one B+tree split its key space into ranges that follow one
    another: a subtree whose keys straddle keys the bucket already holds is
    not one of its parts (it is a sub-bucket, cut off with its name).
    """
    if bucket is None or first is None or last is None:
        return False
    return any(first <= key <= last for key in bucket.values) or any(first <= key <= last for key in bucket.buckets)


def _by_shape(fragment: Fragment, root: Bucket, holes: list[Loss],
              was_branch: Callable[[Loss], bool]) -> tuple[set[BucketPath], set[str]]:
    """Places a hole left by a damaged page fits, given what the fragment holds."""
    shape = fragment.shape
    bases: set[BucketPath] = set()
    hints: set[str] = set()
    first, last = fragment.key_range()
    if shape is None:
        # content of any file: only the pages below a lost branch page of a bucket, whose
        # key range the parent branch recorded, are known to belong to that bucket
        # (never plain values a bucket of that place cannot hold: the leaves of a sub-bucket whose
        # own root page is lost too fit a lost branch's key range all the same)
        for hole in holes:
            if (was_branch(hole) and not _cut_off(hole) and _in_range(first, hole) and _in_range(last, hole)
                    and not _interleaves(find(root, hole.path), first, last)
                    and admits_values(hole.path, fragment.content.values)):
                bases.add(hole.path)
        return bases, hints
    pattern = shape.pattern
    for hole in holes:
        depth = len(hole.path)
        if len(pattern) < depth or not _matches(pattern[:depth], hole.path):
            continue
        if len(pattern) == depth:
            # part of the damaged bucket itself: below a lost branch page, or in the place of a
            # page its parent branch no longer reaches (a wrong child id: the page is intact, and
            # only the bucket's own kind of page fits its key range). A lost root page of unknown
            # kind may have been a branch for a collection (images, blob, ...); a record (an
            # image, a blob) is always a single leaf, so an orphaned record is never its part
            in_a_branch = hole.lo is not None or hole.hi is not None or bool(hole.siblings)
            maybe_branch = was_branch(hole) or in_a_branch or (pattern and pattern[-1] is not None)
            if (maybe_branch and _in_range(first, hole) and _in_range(last, hole)
                    and not _interleaves(find(root, hole.path), first, last)):
                bases.add(hole.path)
            continue
        rest = pattern[depth:]
        if None in rest:
            shown = "/".join("<name>" if part is None else part.decode() for part in pattern)
            hints.add(f"{shown} (the name was on damaged page {hole.pgid} of {path_text(hole.path)})")
            continue
        if not _in_range(rest[0], hole):
            continue
        parent = find(root, hole.path)
        existing = parent.buckets.get(rest[0]) if parent is not None else None  # type: ignore[arg-type]
        if existing is not None and (existing.values or existing.buckets):
            continue  # that sub-bucket was read whole: the fragment is not its lost part
        bases.add(hole.path + tuple(rest))  # type: ignore[arg-type]
    return bases, hints


def _tiling(fragments: list[Fragment], holes: list[Loss], older: Optional[Walk]) -> dict[int, BucketPath]:
    """Unrecognized fragments that are the children of the one lost bucket root page.

    A lost root page that was a branch leaves two or more subtrees whose key
    ranges follow one another without overlap. Sub-buckets of a lost leaf
    come from separate key spaces, but the leaves of one such sub-bucket whose
    own root page is lost too tile its key space just the same: when the
    previous commit's root of that bucket was a leaf, the lost page is not
    taken for a branch; nor when a fragment holds plain values the bucket
    cannot hold (admits_values). Only used when one such hole exists.
    """
    roots = [h for h in holes if h.pgid is not None and not h.siblings and h.lo is None and h.hi is None
             and not _cut_off(h)]
    if len(roots) == 1 and older is not None and older.root_flags.get(roots[0].path) == rawpages.FLAG_LEAF:
        return {}
    unknown = [f for f in fragments if f.shape is None and f.key_range()[0] is not None]
    if len(roots) == 1 and not all(admits_values(roots[0].path, f.content.values) for f in unknown):
        return {}
    spans = sorted((f.key_range(), f.pgid) for f in unknown)
    if len(roots) != 1 or len(spans) < 2:
        return {}
    if any(spans[i][0][1] >= spans[i + 1][0][0] for i in range(len(spans) - 1)):  # type: ignore[operator]
        return {}
    return {pgid: roots[0].path for _span, pgid in spans}


def place(root: Bucket, fragments: list[Fragment], holes: list[Loss], older: Optional[Walk],
          was_branch: Callable[[Loss], bool] = lambda loss: False, stale: str = "",
          out: Optional[Placement] = None) -> Placement:
    """Merge each fragment into root where its place is known; collect the rest for lost-and-found.

    was_branch tells whether a lost page held only pointers (then unrecognized
    pages in its key range are its children); stale, when set, says why these
    fragments may be old copies: they all go to lost-and-found with that reason.
    """
    out = out if out is not None else Placement()
    for fragment in fragments:
        fragment.shape = classify(fragment.content)
        out.pages.update(fragment.page_path)
    holes = list(holes)
    evidence = {}
    for fragment in fragments:
        bases, witness = _by_older_tree(fragment, older) if not stale else (set(), None)
        # a place the previous commit knows is taken only where a damaged page left a hole: bbolt
        # leaks the pages of a bucket deleted in the commit that wrote it (see the facts on bbolt
        # 1.3.6), and those must not bring the deleted bucket back
        # nor where containerd's layout has no place for what the fragment is: the previous tree is
        # read through pages the newest commit freed, which a later commit cut short may have
        # rewritten with nodes of other buckets (its paths are then wrong, its pages intact)
        evidence[fragment.pgid] = ({base for base in bases if any(_explains(hole, base) for hole in holes)
                                    and (fragment.shape is None or _matches(fragment.shape.pattern, base))},
                                   witness)
    # what the previous commit places goes first: the key ranges it fills tell which of the
    # other subtrees can still be parts of a bucket (_interleaves)
    fragments = sorted(fragments, key=lambda f: (len(evidence[f.pgid][0]) != 1,
                                                 len(f.shape.pattern) if f.shape else 99, f.pgid))
    tiles = {} if stale else _tiling(fragments, holes, older)
    for fragment in fragments:
        kind = fragment.shape.kind if fragment.shape else "unrecognized content"
        bases, witness = evidence[fragment.pgid]
        how = f"the previous commit's tree holds page {witness} there" if len(bases) == 1 else ""
        hints: set[str] = set()
        if not bases and not stale:
            bases, hints = _by_shape(fragment, root, holes, was_branch)
            how = f"{kind}, and the only damaged page it fits" if len(bases) == 1 else ""
            if not bases and fragment.pgid in tiles:
                bases = {tiles[fragment.pgid]}
                how = "with the other unreachable pages it tiles the key space of the lost root page"
        entries = fragment.content.count()
        if len(bases) == 1:
            base = bases.pop()
            into = _ensure(root, base)
            out.conflicts += _merge(into, fragment.content)
            for loss in fragment.losses:
                moved = Loss(base + loss.path, loss.pgid, loss.reason, loss.lo, loss.hi, loss.siblings)
                out.losses.append(moved)
                holes.append(moved)
            out.placed.append({"page": fragment.pgid, "bucket": path_text(base), "kind": kind,
                               "entries": entries, "why": how})
            continue
        name = f"page-{fragment.pgid}"
        out.found[name] = fragment.content
        why = (stale if stale else
               "its place is ambiguous: " + ", ".join(sorted(path_text(b) for b in bases)) if bases else
               "no damaged page of the tree explains it (a page bbolt leaked, or its parent is lost)"
               if not hints else "its name was only on a damaged page")
        out.lost_and_found.append({"name": name, "page": fragment.pgid, "kind": kind, "entries": entries,
                                   "why": why, "belongs_under": sorted(hints),
                                   "damaged_inside": [loss.describe() for loss in fragment.losses
                                                      if loss.reason != rawpages.ALREADY_USED]})
    return out


def put_at(shelf: Bucket, path: BucketPath, record: Bucket) -> None:
    """Put record into shelf under its full original path (buckets created on the way)."""
    _ensure(shelf, path[:-1]).buckets[path[-1]] = record


def _merge(into: Bucket, extra: Bucket) -> int:
    """Add what extra holds and into lacks; returns how many keys both held (into's are kept)."""
    clashes = 0
    for key, value in extra.values.items():
        if key in into.values or key in into.buckets:
            clashes += 1
        else:
            into.values[key] = value
    for key, sub in extra.buckets.items():
        if key in into.values:
            clashes += 1
        elif key in into.buckets:
            clashes += _merge(into.buckets[key], sub)
        else:
            into.buckets[key] = sub
    return clashes
