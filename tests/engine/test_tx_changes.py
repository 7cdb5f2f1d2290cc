"""Tx.changes: the engine's count of changes in a transaction, which the
server's write groups use to tell an operation that failed cleanly (the
transaction is as it was) from one that failed half way."""

from __future__ import annotations

import pytest

from boltimages import bolt

CLOSED = 2**64 - 1


def test_every_kind_of_change_moves_it_and_reads_do_not(tmp_path) -> None:
    with bolt.open(str(tmp_path / "c.db")) as db:
        with db.begin(write=True) as tx:
            seen = [tx.changes]

            def moved() -> bool:
                now = tx.changes
                grew = now > seen[-1]
                seen.append(now)
                return grew

            b = tx.create_bucket(b"b")
            assert moved()
            b.put(b"k", b"v")
            assert moved()
            assert b.get(b"k") == b"v" and list(b.items()) == [(b"k", b"v")]
            assert tx.bucket(b"b") is not None
            assert not moved()
            b.delete(b"k")
            assert moved()
            b.set_sequence(7)
            assert moved()
            b.create_bucket(b"child")
            assert moved()
            b.delete_bucket(b"child")
            assert moved()


def test_a_refused_operation_leaves_it_alone(tmp_path) -> None:
    with bolt.open(str(tmp_path / "c.db")) as db:
        with db.begin(write=True) as tx:
            b = tx.create_bucket(b"b")
            before = tx.changes
            with pytest.raises(bolt.BucketExists):
                tx.create_bucket(b"b")
            with pytest.raises(bolt.KeyRequired):
                b.put(b"", b"v")
            with pytest.raises(bolt.BucketNotFound):
                b.delete_bucket(b"missing")
            assert tx.changes == before


def test_closed_and_read_transactions(tmp_path) -> None:
    with bolt.open(str(tmp_path / "c.db")) as db:
        tx = db.begin(write=True)
        tx.create_bucket(b"b")
        tx.commit()
        assert tx.changes == CLOSED
        with db.begin() as rtx:
            assert rtx.changes == 0
        assert rtx.changes == CLOSED
