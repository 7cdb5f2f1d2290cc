#!/usr/bin/env python3
"""The stages of a cold List (no snapshot: the first List after a commit),
in one process, without the transport.

A namespace of N images in containerd's layout (server_bench.write_image_db,
the shape the server benchmark's client makes) is read the way
ImageStore.list_records reads it when it has no snapshot, and framed as the
servicer frames it:

  read     image_records.read_checked: the records cut as the engine walks
           the pages, the ones that are not plain checked in Python
  copy     for comparison, the reading it replaced: walk_bytes (the bucket
           copied into one bytes object), parse of that copy, check of
           every record
  frame    images_service.list_response of the records just read

Each round reads afresh in a new read transaction, as a cold List does.
The first round pays the first touch of the file's pages and of fresh
memory; later ones are reported as median and range. Times are the
thread's CPU time (steadier than wall time on a shared machine); minor
page faults are counted with getrusage.

Usage: PYTHONPATH=plugin python bench/cold_list.py [-n 10000] [--rounds 15]
"""

from __future__ import annotations

import argparse
import pathlib
import resource
import statistics
import sys
import tempfile
import time
from typing import Any, Callable

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import server_bench  # noqa: E402  (bench/ is not a package)
from boltimages import bolt  # noqa: E402
from boltimages.server.images_service import list_response  # noqa: E402
from boltimages.store import image_records  # noqa: E402


def _faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _copy_and_check(images: bolt.Bucket) -> list[image_records.RawImage]:
    records = image_records.parse(images.walk_bytes(2), 0)
    for raw in records:
        raw.check()
    return records


def _stages(images: bolt.Bucket) -> dict[str, Callable[[], Any]]:
    held: dict[str, Any] = {}

    def read() -> Any:
        held["records"] = image_records.read_checked(images)[0]
        return held["records"]

    return {"read": read, "copy": lambda: _copy_and_check(images), "frame": lambda: list_response(held["records"])}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=10000, help="images in the namespace")
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args(argv)
    times: dict[str, list[float]] = {}
    faults: dict[str, list[int]] = {}
    with tempfile.TemporaryDirectory(prefix="cold-list-") as tmp:
        path = pathlib.Path(tmp) / "meta.db"
        server_bench.write_image_db(path, args.n)
        with bolt.open(str(path), read_only=True) as db:
            for _ in range(args.rounds):
                with db.begin() as tx:
                    images = tx.bucket(b"v1").bucket(server_bench.NAMESPACE).bucket(b"images")
                    for name, stage in _stages(images).items():
                        f0, t0 = _faults(), time.thread_time()
                        out = stage()
                        t1, f1 = time.thread_time(), _faults()
                        del out
                        times.setdefault(name, []).append((t1 - t0) * 1e3)
                        faults.setdefault(name, []).append(f1 - f0)
    print(f"{args.n} images, {args.rounds} rounds; ms of CPU (minor page faults)")
    for name, values in times.items():
        rest = values[1:] or values
        print(f"  {name:6s} first {values[0]:6.2f} ({faults[name][0]})   then median {statistics.median(rest):6.2f}"
              f" [{min(rest):.2f}-{max(rest):.2f}] ({statistics.median(faults[name][1:] or faults[name]):.0f})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
