#!/usr/bin/env python3
"""Per-call cost of the Images servicer's store paths, without any transport.

The server benchmark measures a whole gRPC round trip; this one calls the
servicer methods directly (a minimal stand-in for the gRPC context carries the
namespace header and turns abort into an exception), against a real
MetadataDB in a temporary directory, so what is left is exactly the work
between method entry and the response object: validation, engine calls,
commit (with its two fsyncs), protobuf, event publish.

Steps, one client, in order (as in bench/server_bench.py):
  get      Get by name (N images present)
  update   Update of the labels (field mask "labels")
  create   Create of new images
  delete   Delete of those images

Usage:
  PYTHONPATH=plugin python bench/profile_store.py [-n 2000] [--profile STEP] [--no-sync]

``--profile STEP`` prints the cProfile top functions for that step;
``--count-engine`` counts engine (cffi ``lib``) calls per request;
``--listed`` lists the namespace once before each step, so every write
also moves the kept snapshot of all N images along (store/image_records.py);
``--list-after-update K`` times K unfiltered Lists of all N images, each
right after an Update (the Update is not timed): the List that must include
the write just made.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import tempfile
import threading
import time
from typing import Any, Callable

from google.protobuf import field_mask_pb2

from boltimages import bolt
from boltimages.api.containerd.services.images.v1 import images_pb2
from boltimages.server.event_bus import EventBus
from boltimages.server.images_service import ImagesServicer
from boltimages.store.db import MetadataDB

NAMESPACE = "bench"
DIGEST = "sha256:" + "ab" * 32


class Aborted(Exception):
    pass


class _Context:
    """Just enough of grpc.ServicerContext for the servicer (profiling only)."""

    def __init__(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self._metadata = metadata

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata

    def abort(self, code: Any, message: str) -> None:
        raise Aborted(f"{code}: {message}")


def _image(name: str, labels: dict[str, str]) -> images_pb2.Image:
    image = images_pb2.Image(name=name)
    image.labels.update(labels)
    image.target.media_type = "application/vnd.oci.image.manifest.v1+json"
    image.target.digest = DIGEST
    image.target.size = 1234
    return image


def _steps(n: int) -> dict[str, list[Any]]:
    mask = field_mask_pb2.FieldMask(paths=["labels"])
    return {
        "get": [images_pb2.GetImageRequest(name=f"docker.io/library/seed:{i}") for i in range(n)],
        "update": [images_pb2.UpdateImageRequest(
            image=_image(f"docker.io/library/seed:{i}", {"bench.step": "update", "bench.i": str(i)}),
            update_mask=mask) for i in range(n)],
        "create": [images_pb2.CreateImageRequest(
            image=_image(f"docker.io/library/new:{i}", {"bench.group": str(i % 10)})) for i in range(n)],
        "delete": [images_pb2.DeleteImageRequest(name=f"docker.io/library/new:{i}") for i in range(n)],
    }


class _EngineCounter:
    """Counts calls into the C library while installed (wraps boltimages.bolt.lib)."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self._real = bolt.lib

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._real, name)
        if not callable(attr):
            return attr
        counts = self.counts

        def counted(*args: Any) -> Any:
            counts[name] = counts.get(name, 0) + 1
            return attr(*args)
        return counted


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=2000, help="calls per step (default 2000)")
    parser.add_argument("--profile", choices=["get", "update", "create", "delete"], action="append",
                        default=[], help="print a cProfile of this step")
    parser.add_argument("--count-engine", action="store_true", help="count engine calls per request")
    parser.add_argument("--no-sync", action="store_true", help="open without fsync (shows the Python cost)")
    parser.add_argument("--subscribers", type=int, default=0, help="event subscribers to attach")
    parser.add_argument("--concurrent", type=int, default=0, metavar="THREADS",
                        help="also time Create from this many threads at once (group commit), wall time per call")
    parser.add_argument("--listed", action="store_true",
                        help="List before each step: writes then advance a kept snapshot of all images")
    parser.add_argument("--list-after-update", type=int, default=0, metavar="K",
                        help="also time K Lists of all images, each right after an Update (ms per List)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="run everything this many times on fresh files; report the best run per step")
    args = parser.parse_args(argv)
    best: dict[str, float] = {}
    for _ in range(args.repeat):
        for step, seconds in _run(args).items():
            best[step] = seconds if step not in best or not seconds >= best[step] else best[step]
    if args.repeat > 1:
        print(f"best of {args.repeat} (us/call, wall/cpu): " + "  ".join(
            f"{step} {best[step]:.1f}/{best[step + '_cpu']:.1f}" for step in best if not step.endswith("_cpu")))
    return 0


def _run(args: argparse.Namespace) -> dict[str, float]:
    per_call: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="profile-store-") as tmp:
        db = MetadataDB(os.path.join(tmp, "meta.db"), no_sync=args.no_sync)
        bus = EventBus()
        subs = [bus.subscribe() for _ in range(args.subscribers)]

        def publish(namespace: str, topic: str, event: Any) -> None:
            bus.publish(namespace, topic, event)

        servicer = ImagesServicer(db, publish)
        ctx = _Context((("containerd-namespace", NAMESPACE),))
        # seed the images Get and Update touch
        for i in range(args.n):
            servicer.Create(images_pb2.CreateImageRequest(
                image=_image(f"docker.io/library/seed:{i}", {"bench.group": str(i % 10)})), ctx)
        steps = _steps(args.n)
        methods: dict[str, Callable[[Any, Any], Any]] = {
            "get": servicer.Get, "update": servicer.Update, "create": servicer.Create, "delete": servicer.Delete}
        # wall time includes the fsync wait; CPU time (this thread) is what
        # our code costs, and is far less disturbed by other work on the machine
        print(f"{'step':8} {'calls':>6} {'us/call':>9} {'cpu us':>9}")
        for step, requests in steps.items():
            method = methods[step]
            counter = None
            if args.count_engine:
                counter = _EngineCounter()
                bolt.lib = counter  # type: ignore[assignment]
            if args.listed:
                servicer.List(images_pb2.ListImagesRequest(), ctx)
            profiler = cProfile.Profile() if step in args.profile else None
            start = time.perf_counter()
            cpu_start = time.thread_time()
            if profiler is not None:
                profiler.enable()
            for request in requests:
                method(request, ctx)
            if profiler is not None:
                profiler.disable()
            cpu = time.thread_time() - cpu_start
            elapsed = time.perf_counter() - start
            if counter is not None:
                bolt.lib = counter._real
            per_call[step] = elapsed / len(requests) * 1e6
            per_call[step + "_cpu"] = cpu / len(requests) * 1e6
            print(f"{step:8} {len(requests):6d} {per_call[step]:9.1f} {per_call[step + '_cpu']:9.1f}")
            if counter is not None:
                per = {k: v / len(requests) for k, v in sorted(counter.counts.items(), key=lambda kv: -kv[1])}
                total = sum(per.values())
                print(f"         engine calls/request: {total:.1f}  " +
                      ", ".join(f"{k}={v:.1f}" for k, v in per.items()))
            if profiler is not None:
                pstats.Stats(profiler, stream=sys.stdout).sort_stats("tottime").print_stats(25)
        if args.list_after_update:
            per_call["list_after_update"], per_call["list_after_update_cpu"] = _list_after_update(
                servicer, ctx, args.n, args.list_after_update)
            print(f"{'list after update':18} {args.list_after_update:4d} "
                  f"{per_call['list_after_update']:9.1f} {per_call['list_after_update_cpu']:9.1f}  (us per List)")
        if args.concurrent:
            commits = db.batches_committed
            per_call["concurrent"] = _concurrent_creates(servicer, ctx, args.n, args.concurrent)
            per_call["concurrent_cpu"] = float("nan")  # spread over many threads: not measured
            print(f"{'concurrent':10} {args.n:4d} {per_call['concurrent']:9.1f}   ({args.concurrent} threads, "
                  f"{db.batches_committed - commits} commits)")
        for sub in subs:
            sub.close()
        db.close()
    return per_call


def _list_after_update(servicer: ImagesServicer, ctx: _Context, n: int, times: int) -> tuple[float, float]:
    """Wall and CPU time per unfiltered List of the ``n`` seeded images, each
    right after an Update of one of them (the Updates are not timed)."""
    mask = field_mask_pb2.FieldMask(paths=["labels"])
    servicer.List(images_pb2.ListImagesRequest(), ctx)  # the first List reads the bucket whatever happens
    wall = cpu = 0.0
    for i in range(times):
        servicer.Update(images_pb2.UpdateImageRequest(
            image=_image(f"docker.io/library/seed:{i % n}", {"bench.step": "list", "bench.i": str(i)}),
            update_mask=mask), ctx)
        start, cpu_start = time.perf_counter(), time.thread_time()
        servicer.List(images_pb2.ListImagesRequest(), ctx)
        cpu += time.thread_time() - cpu_start
        wall += time.perf_counter() - start
    return wall / times * 1e6, cpu / times * 1e6


def _concurrent_creates(servicer: ImagesServicer, ctx: _Context, n: int, threads: int) -> float:
    """Wall time per Create with ``threads`` callers at once (the group commit path)."""
    requests = [images_pb2.CreateImageRequest(image=_image(f"docker.io/library/many:{i}", {"bench.group": "1"}))
                for i in range(n)]
    barrier = threading.Barrier(threads + 1)

    def worker(part: list[Any]) -> None:
        barrier.wait()
        for request in part:
            servicer.Create(request, ctx)
    workers = [threading.Thread(target=worker, args=(requests[i::threads],)) for i in range(threads)]
    for thread in workers:
        thread.start()
    barrier.wait()
    start = time.perf_counter()
    for thread in workers:
        thread.join()
    return (time.perf_counter() - start) / n * 1e6


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
