"""Which content blobs an image needs, read from containerd's content store directory.

containerd's garbage collector keeps a blob only while something references
it: an image references its target digest, and a blob references other
blobs through labels ``containerd.io/gc.ref.content.<...>`` on its metadata
record (metadata/gc.go). When blobs are pulled or imported, containerd labels
each index/manifest record with its children using images.ChildGCLabels:
``.config`` for a config, ``.m.<i>`` for manifests, ``.l.<i>`` for layers,
``.<i>`` for anything else, the counter running per prefix. Copied records
must carry those labels, or GC would drop the layers.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Optional

INDEX_TYPES = {"application/vnd.oci.image.index.v1+json",
               "application/vnd.docker.distribution.manifest.list.v2+json"}
MANIFEST_TYPES = {"application/vnd.oci.image.manifest.v1+json",
                  "application/vnd.docker.distribution.manifest.v2+json"}
CONFIG_TYPES = {"application/vnd.oci.image.config.v1+json",
                "application/vnd.docker.container.image.v1+json",
                "application/vnd.containerd.container.criu.checkpoint.criu.tar",
                "application/vnd.containerd.container.checkpoint.config.v1+proto"}
LAYER_PREFIXES = ("application/vnd.oci.image.layer.", "application/vnd.docker.image.rootfs.")
GC_CONTENT_PREFIX = "containerd.io/gc.ref.content."
#: refuse to parse absurd "manifests" (a damaged or hostile content store)
MAX_MANIFEST_BYTES = 32 << 20


def child_label_key(media_type: str) -> str:
    if media_type in CONFIG_TYPES:
        return GC_CONTENT_PREFIX + "config"
    if media_type in MANIFEST_TYPES:
        return GC_CONTENT_PREFIX + "m."
    if media_type.startswith(LAYER_PREFIXES):
        return GC_CONTENT_PREFIX + "l."
    return GC_CONTENT_PREFIX


@dataclass
class Node:
    digest: str
    media_type: str
    size: int
    present: bool
    #: GC labels this blob should carry for its children
    child_labels: dict[str, str] = field(default_factory=dict)


def blob_path(content_root: str, digest: str) -> Optional[str]:
    alg, sep, hexpart = digest.partition(":")
    if not sep or not alg.isalnum() or not hexpart.isalnum() or "/" in digest:
        return None
    return os.path.join(content_root, "blobs", alg, hexpart)


def reachable(content_root: str, digest: str, media_type: str, size: int) -> list[Node]:
    """Every blob reachable from a target descriptor, target first; absent blobs included, marked."""
    out: list[Node] = []
    seen: set[str] = set()
    stack = [(digest, media_type, size)]
    while stack:
        dgst, mtype, dsize = stack.pop(0)
        if dgst in seen:
            continue
        seen.add(dgst)
        path = blob_path(content_root, dgst)
        present = path is not None and os.path.isfile(path)
        node = Node(dgst, mtype, os.path.getsize(path) if present else dsize, present)
        out.append(node)
        if not present or (mtype not in INDEX_TYPES and mtype not in MANIFEST_TYPES):
            continue
        if node.size > MAX_MANIFEST_BYTES:
            continue
        try:
            with open(path, "rb") as fh:
                doc = json.load(fh)
        except (OSError, ValueError):
            continue
        children = []
        if mtype in INDEX_TYPES:
            children = doc.get("manifests") or []
        else:
            if isinstance(doc.get("config"), dict):
                children.append(doc["config"])
            children.extend(doc.get("layers") or [])
        counters: dict[str, int] = {}
        for child in children:
            if not isinstance(child, dict) or not isinstance(child.get("digest"), str):
                continue
            ctype = str(child.get("mediaType", ""))
            key = child_label_key(ctype)
            idx = counters.get(key, 0)
            counters[key] = idx + 1
            label = key + str(idx) if idx > 0 or key.endswith(".") else key
            node.child_labels[label] = child["digest"]
            stack.append((child["digest"], ctype, int(child.get("size", 0) or 0)))
    return out
