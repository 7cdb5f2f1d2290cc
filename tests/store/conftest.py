"""Fixtures for store tests: a fresh metadata file per test."""

from __future__ import annotations

import pathlib
from typing import Iterator

import pytest


@pytest.fixture
def meta_db(tmp_path: pathlib.Path) -> Iterator["object"]:
    from boltimages.store.db import MetadataDB
    db = MetadataDB(tmp_path / "meta.db")
    yield db
    db.close()
