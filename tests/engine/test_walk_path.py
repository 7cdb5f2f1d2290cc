"""DB.walk_path (bolt_db_walk_path): a bucket's walk copy reached by its
path, in one engine call with a read transaction of its own."""

from __future__ import annotations

import pytest

from boltimages import bolt


@pytest.fixture
def tree(make_db) -> bolt.DB:
    db = make_db(page_size=4096)
    with db.begin(write=True) as tx:
        v1 = tx.create_bucket(b"v1")
        v1.put(b"version", b"\x03")
        images = v1.create_bucket(b"ns").create_bucket(b"images")
        for i in range(300):  # spills the images bucket over several pages
            rec = images.create_bucket(b"image-%04d" % i)
            rec.put(b"createdat", b"t" * 15)
            rec.create_bucket(b"labels").put(b"k%d" % i, b"v" * (i % 50))
            rec.create_bucket(b"target").put(b"digest", b"sha256:%064d" % i)
    return db


@pytest.mark.parametrize("path", [(), (b"v1",), (b"v1", b"ns"), (b"v1", b"ns", b"images"),
                                  (b"v1", b"ns", b"images", b"image-0000"),
                                  (b"v1", b"ns", b"images", b"image-0299")])
@pytest.mark.parametrize("depth", [0, 1, 2, 64])
def test_same_copy_as_a_walk_through_a_transaction(tree: bolt.DB, path: tuple, depth: int) -> None:
    with tree.begin() as tx:
        bucket = tx.root
        for name in path:
            bucket = bucket.bucket(name)
        expected = bucket.walk_bytes(depth)
    assert tree.walk_path(path, depth) == expected


@pytest.mark.parametrize("path", [(b"v2",), (b"v1", b"other"), (b"v1", b"ns", b"images", b"image-9999"),
                                  (b"v1", b"ns", b"images", b""),
                                  (b"v1", b"version"),  # a value, not a bucket
                                  (b"v1", b"version", b"deeper")])
def test_no_such_bucket_is_none(tree: bolt.DB, path: tuple) -> None:
    assert tree.walk_path(path, 1) is None


def test_reads_the_last_commit_only(tree: bolt.DB) -> None:
    path = (b"v1", b"ns", b"images", b"image-0007")
    before = tree.walk_path(path, 1)
    tx = tree.begin(write=True)
    tx.bucket(b"v1").bucket(b"ns").bucket(b"images").delete_bucket(b"image-0007")
    assert tree.walk_path(path, 1) == before  # the open write is not seen
    tx.commit()
    assert tree.walk_path(path, 1) is None


def test_closed_database_is_a_clear_error(tree: bolt.DB) -> None:
    tree.close()
    with pytest.raises(bolt.DatabaseClosed):
        tree.walk_path((b"v1",), 1)
