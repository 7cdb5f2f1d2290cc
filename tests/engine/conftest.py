"""Fixtures for the engine's API tests: fresh databases on tmp_path."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

import pytest

from boltimages import bolt


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "test.db"


@pytest.fixture
def make_db(tmp_path: Path) -> Iterator[Callable[..., bolt.DB]]:
    """Open databases under tmp_path (no fsync: these tests are not about
    durability) and close whatever is still open at the end."""
    opened: list[bolt.DB] = []

    def make(name: str = "test.db", **options: object) -> bolt.DB:
        options.setdefault("no_sync", True)
        db = bolt.open(tmp_path / name, **options)
        opened.append(db)
        return db

    yield make
    for db in opened:
        if not db.closed:
            db.close()


@pytest.fixture
def db(make_db: Callable[..., bolt.DB]) -> bolt.DB:
    return make_db()
