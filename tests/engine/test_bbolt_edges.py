"""Edges where the engine must do exactly what real bbolt does, checked with the oracle.

- bbolt limits key size only in Put; a bucket name may be longer than 32 KiB
  (containerd stores an image under a bucket named after it, and accepts
  names of any length), so such names must round-trip through both engines.
- A compacted copy is trimmed to its last page; bbolt must still open it,
  pass its check and read the same content.
"""

from __future__ import annotations

import os

import pytest

from boltimages import bolt
from tests.oracle import dump_file, first_dump_difference

pytestmark = pytest.mark.compat


def test_long_bucket_names_match_bbolt(oracle, tmp_path):
    path = tmp_path / "names.db"
    long_names = [b"n" * 32769, b"m" * 40000, bytes(range(256)) * 300]
    with bolt.open(path) as db:
        with db.begin(write=True) as tx:
            top = tx.create_bucket(b"images")
            for i, name in enumerate(long_names):
                top.create_bucket(name).put(b"k", b"%d" % i)
            with pytest.raises(bolt.KeyTooLarge):
                top.put(b"x" * 32769, b"value keys stay limited")
    assert oracle.check(path) == []
    assert first_dump_difference(dump_file(path), oracle.dump(path)) is None

    # and bbolt's own long bucket names read back through the engine
    ops = [{"op": "create_bucket", "path": [(b"z" * 50000).hex()]},
           {"op": "put", "path": [(b"z" * 50000).hex()], "key": b"k".hex(), "value": b"v".hex()},
           {"op": "commit"}]
    theirs = tmp_path / "theirs.db"
    results = oracle.apply(theirs, ops)
    assert all("e" not in r for r in results), results
    assert first_dump_difference(dump_file(theirs), oracle.dump(theirs)) is None


def test_compacted_copy_is_trimmed_and_valid_for_bbolt(oracle, tmp_path):
    src, dst = tmp_path / "src.db", tmp_path / "dst.db"
    with bolt.open(src) as db:
        with db.begin(write=True) as tx:
            bucket = tx.create_bucket(b"b")
            bucket.put_many([(b"%08d" % i, b"v" * 300) for i in range(30000)])
        with db.begin(write=True) as tx:
            bucket = tx.bucket(b"b")
            for i in range(29000):
                bucket.delete(b"%08d" % i)
    bolt.compact(src, dst)
    assert os.path.getsize(dst) < os.path.getsize(src) // 4
    with bolt.open(dst, read_only=True) as db:
        info = db.info()
    assert os.path.getsize(dst) == info["pgid"] * info["page_size"]
    assert oracle.check(dst) == []
    assert first_dump_difference(oracle.dump(dst), oracle.dump(src)) is None
    # bbolt can keep writing to the trimmed file
    results = oracle.apply(dst, [{"op": "create_bucket", "path": [b"after".hex()]}, {"op": "commit"}])
    assert all("e" not in r for r in results), results
    assert oracle.check(dst) == []
