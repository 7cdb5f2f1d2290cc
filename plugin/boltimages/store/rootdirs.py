"""Where containerd keeps its stores under its root directory (``/var/lib/containerd``).

    <root>/io.containerd.metadata.v1.bolt/meta.db     the metadata file (bbolt)
    <root>/io.containerd.content.v1.content/blobs/... the content store (blob files)
    <root>/io.containerd.snapshotter.v1.<name>/...    the snapshotters' own files

One place for serve (Content/Read, Snapshots) and the offline tools (copy, import): all
find containerd's stores next to the metadata file they were given, so a copy
of a node's root works the same as the node itself.
"""

from __future__ import annotations

import os
from typing import Optional

METADATA_DIR = "io.containerd.metadata.v1.bolt"
CONTENT_DIR = "io.containerd.content.v1.content"


def containerd_root(db_path: str) -> Optional[str]:
    """The containerd root holding ``db_path`` (``<root>/io.containerd.metadata.v1.bolt/meta.db``),
    where the content directory and the snapshotters' own files live; None otherwise."""
    meta_dir = os.path.dirname(os.path.abspath(db_path))
    if os.path.basename(meta_dir) != METADATA_DIR:
        return None
    return os.path.dirname(meta_dir)


def expected_content_root(db_path: str) -> Optional[str]:
    """Where the content store would be if ``db_path`` sits in a containerd root (it may not exist)."""
    root = containerd_root(db_path)
    return None if root is None else os.path.join(root, CONTENT_DIR)


def default_content_root(db_path: str) -> Optional[str]:
    """containerd's content directory when ``db_path`` sits in a containerd root and it exists, else None."""
    candidate = expected_content_root(db_path)
    return candidate if candidate is not None and os.path.isdir(candidate) else None
