"""compact's memory follows its transaction budget, not the file's size.

Measured on a 50,000-image containerd-shaped file (450 MB) with the default
64 MiB budget, peak RSS of the compaction step: 1,263 MB before (the budget
counted key and value bytes only, and both files' pages stayed mapped in),
298 MB after (per-entry and per-bucket cost counted, mapped pages dropped at
each commit). Here a smaller file of the same shape keeps the test short: the
peak growth during compaction must stay well under the file's size (40,000
images, 168 MB file, 2 MiB budget: 222 MB of growth before, 28 MB after).
"""

from __future__ import annotations

import os
import subprocess
import sys

from boltimages import bolt
from tests.helpers import child_env, slow_budget

CHILD = r"""
import sys
from boltimages import bolt

def hwm_kb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])

src, dst, budget = sys.argv[1], sys.argv[2], int(sys.argv[3])
with bolt.open(src, read_only=True) as db:
    with db.begin() as tx:  # warm: the engine and the tree's top levels, before the baseline
        tx.bucket(b"v1")
    base = hwm_kb()
    db.compact_to(dst, tx_max_bytes=budget)
print(base, hwm_kb())
"""


def _containerd_shaped(path: str, images: int) -> None:
    """Images as containerd lays them out: a bucket per image with times, labels and a target."""
    with bolt.open(path) as db, db.begin(write=True) as tx:
        ns = tx.create_bucket(b"v1").create_bucket(b"default")
        imgs = ns.create_bucket(b"images")
        for i in range(images):
            img = imgs.create_bucket(b"registry.example.com/team/app-%06d:v1" % i)
            img.put_many([(b"createdat", b"\x01" + bytes(14)), (b"updatedat", b"\x01" + bytes(14))])
            img.create_bucket(b"labels").put_many([(b"org.example.build", b"%040d" % i)])
            img.create_bucket(b"target").put_many([
                (b"digest", b"sha256:%064x" % i), (b"mediatype", b"application/vnd.oci.image.manifest.v1+json"),
                (b"size", b"\x80\x10")])


def test_compaction_peak_follows_the_budget_not_the_file(tmp_path):
    src, dst = str(tmp_path / "src.db"), str(tmp_path / "dst.db")
    _containerd_shaped(src, slow_budget(40_000))
    size = os.path.getsize(src)
    budget = 2 << 20
    done = subprocess.run([sys.executable, "-c", CHILD, src, dst, str(budget)], env=child_env(),
                          capture_output=True, text=True, timeout=300, check=True)
    base_kb, peak_kb = map(int, done.stdout.split())
    growth = (peak_kb - base_kb) * 1024
    # the budget, the per-commit page images and the pages read per transaction, with room to
    # spare; before this change the growth was the whole source file and more
    assert growth < size / 3, (growth, size)
    with bolt.open(dst, read_only=True) as db:
        assert db.check() == []
