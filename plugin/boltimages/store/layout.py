"""Where things live in containerd's metadata file (``meta.db``).

We share the file with containerd, so the layout is containerd's, not ours.
Every name below was read off files containerd 1.6.20 wrote and checked
against containerd's sources (1.6 and 2.x). Buckets are drawn ``[name]``,
keys ``name = value``; ``<...>`` is an arbitrary key.

    (root)
    ├── [v1]                                  schema bucket, the only root bucket we create
    │   ├── version = <zig-zag varint>        db version (3 for 1.6/1.7, 4 from 2.0); see db.py
    │   └── [<namespace>]                     one bucket per namespace (identifier rules)
    │       ├── [labels]                      namespace labels          (namespaces store)
    │       │   └── <key> = <value>
    │       ├── [images]                      NOTE "images", although containerd's own
    │       │   │                             schema comment still says "image"
    │       │   └── [<image name>]            (images store, this package)
    │       │       ├── createdat = <Go time.MarshalBinary, 15 or 16 bytes>
    │       │       ├── updatedat = <Go time.MarshalBinary>
    │       │       ├── [labels]              present only when the image has labels
    │       │       │   └── <key> = <value>   empty values are never stored
    │       │       ├── [annotations]         target descriptor annotations (1.6 and 2.x)
    │       │       │   └── <key> = <value>
    │       │       └── [target]
    │       │           ├── digest    = "<algorithm>:<hex>"
    │       │           ├── mediatype = <string>
    │       │           └── size      = <zig-zag varint>
    │       ├── [leases]                      owned by the leases module (leases store)
    │       │   └── [<lease id>] createdat, [labels], [content], [snapshots], [ingests],
    │       │       [images]/<image name> = ""   2.x: written by the images store when an
    │       │                                     image with containerd.io/gc.expire is
    │       │                                     created/updated under a lease
    │       │
    │       │   ---- never touched by the server, kept byte-for-byte ----
    │       ├── [containers]                  container records
    │       ├── [content]                     [blob]/<digest>/{createdat,updatedat,size,[labels]},
    │       │                                 [ingests]/<ref>/{ref,expireat,expected}
    │       │                                 (the offline `copy` command alone adds
    │       │                                 [blob] records for the images it copies)
    │       ├── [snapshots]                   [<snapshotter>]/<key>/{name,parent,[children],...}
    │       └── [sandboxes]                   containerd 2.x (moved here by its migration 4)
    └── (other root buckets)                  containerd 1.x may leave <ns>/sandboxes at the
                                              root; 2.x migration 4 moves/deletes them. Untouched.

Rules that follow from sharing the file:
  * we only ever create ``v1``, ``v1/<ns>``, ``v1/<ns>/images`` (and what is below
    an image), ``v1/<ns>/labels`` and ``v1/<ns>/leases`` (the last two via their
    own modules), plus, from the offline ``copy`` command only,
    ``v1/<ns>/content/blob/<digest>`` records for blobs the copied images reach
    (tools/records.py); every other bucket and key is left exactly as found;
  * ``version`` is written only when a file is initialised; an existing value is
    never changed (a newer containerd owns migrations).
"""

from __future__ import annotations

# --- root ---------------------------------------------------------------
#: schema bucket at the root of the file
SCHEMA_BUCKET = b"v1"
#: key inside SCHEMA_BUCKET holding the db version as a zig-zag varint
DB_VERSION_KEY = b"version"

# --- per-namespace object buckets ----------------------------------------
NS_LABELS_BUCKET = b"labels"
IMAGES_BUCKET = b"images"
LEASES_BUCKET = b"leases"
# owned by containerd alone; named here so code and tests can refer to them
CONTAINERS_BUCKET = b"containers"
CONTENT_BUCKET = b"content"
SNAPSHOTS_BUCKET = b"snapshots"
SANDBOXES_BUCKET = b"sandboxes"
BLOB_BUCKET = b"blob"
INGESTS_BUCKET = b"ingests"
NOT_OURS = (CONTAINERS_BUCKET, CONTENT_BUCKET, SNAPSHOTS_BUCKET, SANDBOXES_BUCKET)

# --- keys and sub-buckets of an object record -----------------------------
CREATED_AT_KEY = b"createdat"
UPDATED_AT_KEY = b"updatedat"
LABELS_BUCKET = b"labels"
ANNOTATIONS_BUCKET = b"annotations"
TARGET_BUCKET = b"target"
DIGEST_KEY = b"digest"
MEDIA_TYPE_KEY = b"mediatype"
SIZE_KEY = b"size"

# --- lease record (leases store) ------------------------------------------
LEASE_CONTENT_BUCKET = b"content"
LEASE_SNAPSHOTS_BUCKET = b"snapshots"
LEASE_INGESTS_BUCKET = b"ingests"
LEASE_IMAGES_BUCKET = b"images"


def namespace_path(namespace: str) -> tuple[bytes, bytes]:
    """Bucket path of one namespace: ``v1/<ns>``."""
    return (SCHEMA_BUCKET, namespace.encode())


def images_path(namespace: str) -> tuple[bytes, bytes, bytes]:
    """Bucket path of a namespace's images: ``v1/<ns>/images``."""
    return (SCHEMA_BUCKET, namespace.encode(), IMAGES_BUCKET)


def namespace_labels_path(namespace: str) -> tuple[bytes, bytes, bytes]:
    """Bucket path of a namespace's labels: ``v1/<ns>/labels``."""
    return (SCHEMA_BUCKET, namespace.encode(), NS_LABELS_BUCKET)


def leases_path(namespace: str) -> tuple[bytes, bytes, bytes]:
    """Bucket path of a namespace's leases: ``v1/<ns>/leases``."""
    return (SCHEMA_BUCKET, namespace.encode(), LEASES_BUCKET)
