"""Snapshot kinds from a snapshotter's own file: containerd's layout, and files that cannot tell."""

from __future__ import annotations

import pathlib

from boltimages import bolt
from boltimages.store.rootdirs import containerd_root
from boltimages.store.snapshot_kinds import ACTIVE, COMMITTED, VIEW, SnapshotKinds


def _snapshotter_file(root: pathlib.Path, records: dict[bytes, bytes | None]) -> pathlib.Path:
    """A file in containerd's snapshots/storage layout; a None kind leaves the key out."""
    path = root / "io.containerd.snapshotter.v1.overlayfs" / "metadata.db"
    path.parent.mkdir(parents=True)
    with bolt.open(path) as db:
        def write(tx):
            snapshots = tx.create_bucket(b"v1").create_bucket(b"snapshots")
            for n, (key, kind) in enumerate(records.items(), 1):
                record = snapshots.create_bucket(key)
                record.put(b"id", bytes([n]))
                if kind is not None:
                    record.put(b"kind", kind)
        db.update(write)
    return path


def test_kinds_as_containerd_stores_them(tmp_path: pathlib.Path) -> None:
    _snapshotter_file(tmp_path, {b"default/1/c": b"\x03", b"default/2/a": b"\x02", b"default/3/v": b"\x01",
                                 b"default/4/odd": b"\x09", b"default/5/long": b"\x02\x00", b"default/6/none": None})
    kinds = SnapshotKinds(str(tmp_path)).kinds("overlayfs", [b"default/1/c", b"default/2/a", b"default/3/v",
                                                             b"default/4/odd", b"default/5/long",
                                                             b"default/6/none", b"default/7/absent", b""])
    # unknown bytes read as 0 (UNKNOWN), never as a guess; absent records are left out
    assert kinds == {b"default/1/c": COMMITTED, b"default/2/a": ACTIVE, b"default/3/v": VIEW,
                     b"default/4/odd": 0, b"default/5/long": 0, b"default/6/none": 0}


def test_no_file_no_root_or_a_hostile_name_tell_nothing(tmp_path: pathlib.Path) -> None:
    _snapshotter_file(tmp_path, {b"k": b"\x02"})
    assert SnapshotKinds(None).kinds("overlayfs", [b"k"]) is None
    assert SnapshotKinds(str(tmp_path)).kinds("native", [b"k"]) is None
    for name in ("../io.containerd.snapshotter.v1.overlayfs", "", ".hidden", "a/b"):
        assert SnapshotKinds(str(tmp_path)).path(name) is None


def test_damaged_file_is_unknown_with_one_warning(tmp_path: pathlib.Path, caplog) -> None:
    path = tmp_path / "io.containerd.snapshotter.v1.overlayfs" / "metadata.db"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a bolt file" * 500)
    kinds = SnapshotKinds(str(tmp_path))
    assert kinds.kinds("overlayfs", [b"k"]) is None
    assert kinds.kinds("overlayfs", [b"k"]) is None
    warnings = [r for r in caplog.records if "snapshot kinds unknown" in r.getMessage()]
    assert len(warnings) == 1 and str(path) in warnings[0].getMessage()


def test_containerd_root_only_for_a_containerd_layout() -> None:
    assert containerd_root("/var/lib/containerd/io.containerd.metadata.v1.bolt/meta.db") == "/var/lib/containerd"
    assert containerd_root("/var/lib/boltimages/meta.db") is None
