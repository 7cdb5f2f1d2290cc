"""Where containerd keeps its stores under its root directory (``/var/lib/containerd``).

    <root>/io.containerd.metadata.v1.bolt/meta.db     the metadata file (bbolt)
    <root>/io.containerd.content.v1.content/blobs/... the content store (blob files)

One place for serve (Content/Read) and the offline tools (copy, import): both
find the content store next to the metadata file they were given, so a copy
of a node's root works the same as the node itself.
"""

from __future__ import annotations

import os
from typing import Optional

METADATA_DIR = "io.containerd.metadata.v1.bolt"
CONTENT_DIR = "io.containerd.content.v1.content"


def expected_content_root(db_path: str) -> Optional[str]:
    """Where the content store would be if ``db_path`` is ``<root>/io.containerd.metadata.v1.bolt/meta.db``."""
    meta_dir = os.path.dirname(os.path.abspath(db_path))
    if os.path.basename(meta_dir) != METADATA_DIR:
        return None
    return os.path.join(os.path.dirname(meta_dir), CONTENT_DIR)


def default_content_root(db_path: str) -> Optional[str]:
    """containerd's content directory when ``db_path`` sits in a containerd root and it exists, else None."""
    candidate = expected_content_root(db_path)
    return candidate if candidate is not None and os.path.isdir(candidate) else None
