"""MetadataDB: version initialisation rules and read-only use."""

from __future__ import annotations

import pathlib

import pytest

from boltimages import bolt
from boltimages.errors import FailedPrecondition, Unavailable
from boltimages.store.db import MetadataDB


def test_schema_without_version_is_left_alone(tmp_path: pathlib.Path) -> None:
    # containerd would read this as version 0 and migrate; writing 3 would skip that
    path = tmp_path / "meta.db"
    with bolt.open(path) as raw:
        raw.update(lambda tx: tx.create_bucket(b"v1").create_bucket(b"default"))
    with MetadataDB(path) as db:
        assert db.db_version() is None


def test_read_only(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "meta.db"
    MetadataDB(path).close()
    with MetadataDB(path, read_only=True) as db:
        assert db.db_version() == 3
        with pytest.raises(FailedPrecondition, match="read-only"):
            db.update(lambda tx: None)
        with pytest.raises(FailedPrecondition, match="read-only"):
            db.batch(lambda tx: None)
        # readers share the file
        with MetadataDB(path, read_only=True) as other:
            assert other.db_version() == 3


def test_missing_file_or_directory(tmp_path: pathlib.Path) -> None:
    with pytest.raises(Unavailable, match="does not exist"):
        MetadataDB(tmp_path / "nope" / "meta.db")
    with pytest.raises(Unavailable):
        MetadataDB(tmp_path / "absent.db", read_only=True)


def test_not_a_bolt_file(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "meta.db"
    path.write_bytes(b"this is not a bolt file" * 500)
    with pytest.raises(Unavailable) as info:
        MetadataDB(path)
    assert str(info.value).startswith(f"{path}")
    assert "\n" not in str(info.value)
