#!/usr/bin/env python3
"""Engine benchmarks: real bbolt 1.3.6 (Go) vs our C core vs our Python API.

One run generates the seeded keys and values once (Python), writes them to
files, and runs the same workloads through three drivers in turn so each has
the machine to itself:

  * bench/engine/bbolt_bench.go  - go.etcd.io/bbolt 1.3.6 from /usr/share/gocode,
                                   built now in GOPATH mode into bench/out/build
  * bench/engine/core_bench.c    - native/*.c linked directly, cc -O2
  * this file (--worker python)  - boltimages.bolt, once with batch calls
                                   (put_many, the items() scan, the store's
                                   record reader) where they fit and once
                                   with one call per item

Every driver verifies what it wrote or read (counts and byte sums); the
checks must agree across drivers or the run is flagged. Each driver reports
the time of the workload itself, excluding process start and file loading.
Output: a Markdown table (ratios are reference time / our time, so > 1.0
means boltimages is faster) and JSON under bench/out/.
"""

from __future__ import annotations

import argparse
import json
import operator
import os
import pathlib
import random
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Optional

import benchlib
from benchlib import BenchError

KEY_LEN = 16
VALUE_LEN = 100
WORKLOADS = ["a", "b", "c", "d", "e", "f"]
# Rows of the table: (result key, what it measures).
ROWS = [
    ("a", "a. bulk load {a} random keys, one tx"),
    ("b", "b. load {b} sorted keys, one tx"),
    ("c", "c. {c} random point gets"),
    ("d", "d. cursor scan of {b} keys"),
    ("e", "e. {e} single-key txs, fsync each"),
    ("f_create", "f. create {f} image records, one tx each"),
    ("f_read", "f. read all {f} image records"),
]
FULL_SIZES = {"a": 100_000, "b": 1_000_000, "c": 1_000_000, "e": 2_000, "f": 10_000}
QUICK_SIZES = {"a": 20_000, "b": 200_000, "c": 200_000, "e": 500, "f": 2_000}


# ---------------------------------------------------------------- data files

def _unique_keys(rng: random.Random, n: int) -> list[bytes]:
    seen: set[bytes] = set()
    keys: list[bytes] = []
    while len(keys) < n:
        k = rng.randbytes(KEY_LEN)
        if k not in seen:
            seen.add(k)
            keys.append(k)
    return keys


def _go_time(unix_seconds: int, nanos: int) -> bytes:
    """Go's time.MarshalBinary (version 1, UTC), as containerd stores createdat."""
    return struct.pack(">bqih", 1, unix_seconds + 62135596800, nanos, -1)


def _image_records(rng: random.Random, n: int) -> bytes:
    codec = benchlib.import_boltimages("store.codec")
    repos = ["docker.io/library", "ghcr.io/example", "registry.k8s.io", "quay.io/team"]
    out = bytearray()
    for i in range(n):
        name = f"{rng.choice(repos)}/app-{i:05d}:v{rng.randrange(100)}.{rng.randrange(10)}".encode()
        stamp = _go_time(1_700_000_000 + i, rng.randrange(1_000_000_000))
        fields = [name, stamp, stamp,
                  b"sha256:" + rng.randbytes(32).hex().encode(),
                  b"application/vnd.oci.image.manifest.v1+json",
                  codec.encode_varint(rng.randrange(500, 50_000))]
        for j in range(rng.randrange(0, 5)):
            fields += [f"org.example.label-{j}".encode(), rng.randbytes(rng.randrange(4, 24)).hex().encode()]
        out += struct.pack("<I", len(fields))
        for f in fields:
            out += struct.pack("<I", len(f)) + f
    return bytes(out)


def write_data(data_dir: pathlib.Path, sizes: dict[str, int], seed: int) -> None:
    rng = random.Random(seed)
    a = _unique_keys(rng, sizes["a"])
    (data_dir / "a.keys").write_bytes(b"".join(a))
    (data_dir / "a.values").write_bytes(rng.randbytes(VALUE_LEN * len(a)))
    b = sorted(_unique_keys(rng, sizes["b"]))
    (data_dir / "b.keys").write_bytes(b"".join(b))
    (data_dir / "b.values").write_bytes(rng.randbytes(VALUE_LEN * len(b)))
    c = [b[rng.randrange(len(b))] for _ in range(sizes["c"])]
    (data_dir / "c.keys").write_bytes(b"".join(c))
    e = _unique_keys(rng, sizes["e"])
    (data_dir / "e.keys").write_bytes(b"".join(e))
    (data_dir / "e.values").write_bytes(rng.randbytes(VALUE_LEN * len(e)))
    (data_dir / "f.images").write_bytes(_image_records(rng, sizes["f"]))


def _read_fixed(path: pathlib.Path, size: int) -> list[bytes]:
    raw = path.read_bytes()
    if len(raw) % size:
        raise BenchError(f"{path}: length {len(raw)} is not a multiple of {size}")
    return [raw[i:i + size] for i in range(0, len(raw), size)]


def _read_images(path: pathlib.Path) -> list[list[bytes]]:
    raw = path.read_bytes()
    out: list[list[bytes]] = []
    off = 0
    while off < len(raw):
        (count,) = struct.unpack_from("<I", raw, off)
        off += 4
        fields = []
        for _ in range(count):
            (n,) = struct.unpack_from("<I", raw, off)
            off += 4
            fields.append(raw[off:off + n])
            off += n
        out.append(fields)
    return out


# ---------------------------------------------------------------- python driver

def python_worker(data_dir: pathlib.Path, db_dir: pathlib.Path, only: set[str], batch: bool) -> dict[str, Any]:
    from boltimages import bolt
    from boltimages.store import image_records

    bench = b"bench"
    out: dict[str, Any] = {}

    def fresh(name: str) -> pathlib.Path:
        path = db_dir / f"py-{name}.db"
        path.unlink(missing_ok=True)
        return path

    def count(path: pathlib.Path) -> str:
        with bolt.open(str(path), read_only=True) as db, db.begin() as tx:
            n = total = 0
            for _, v in tx.bucket(bench).items():
                n += 1
                total += len(v)
        return f"keys={n} bytes={total}"

    def load(path: pathlib.Path, keys: list[bytes], values: list[bytes]) -> dict[str, Any]:
        with bolt.open(str(path)) as db:
            start, cpu0 = time.perf_counter(), time.process_time()
            with db.begin(write=True) as tx:
                b = tx.create_bucket(bench)
                if batch:
                    b.put_many(zip(keys, values))
                else:
                    put = b.put
                    for k, v in zip(keys, values):
                        put(k, v)
            secs, cpu = time.perf_counter() - start, time.process_time() - cpu0
        return {"seconds": secs, "cpu_seconds": cpu, "ops": len(keys), "check": count(path)}

    if "a" in only:
        path = fresh("a")
        out["a"] = load(path, _read_fixed(data_dir / "a.keys", KEY_LEN), _read_fixed(data_dir / "a.values", VALUE_LEN))
        path.unlink()
    if only & {"b", "c", "d"}:
        path = fresh("b")
        out["b"] = load(path, _read_fixed(data_dir / "b.keys", KEY_LEN), _read_fixed(data_dir / "b.values", VALUE_LEN))
        if "c" in only and not batch:
            # no batch call: the multi-get (get_many) went with the engine
            # API no product code used
            keys = _read_fixed(data_dir / "c.keys", KEY_LEN)
            with bolt.open(str(path), read_only=True) as db:
                start, cpu0 = time.perf_counter(), time.process_time()
                with db.begin() as tx:
                    get = tx.bucket(bench).get
                    values = [get(k) for k in keys]
                secs, cpu = time.perf_counter() - start, time.process_time() - cpu0
            found = [v for v in values if v is not None]
            out["c"] = {"seconds": secs, "cpu_seconds": cpu, "ops": len(keys),
                        "check": f"found={len(found)} sum={sum(v[0] for v in found)}"}
            # Dead from here on, as they are in the Go and C drivers: kept
            # alive, their three million objects would sit in the heap that
            # row d's scan allocates from.
            del keys, values, found
        if "d" in only:
            with bolt.open(str(path), read_only=True) as db:
                n = acc = 0
                start, cpu0 = time.perf_counter(), time.process_time()
                with db.begin() as tx:
                    b = tx.bucket(bench)
                    if batch:
                        # Timed: the batch scan behind Bucket.items (internal
                        # _chunks) handing every key and value to Python as
                        # bytes, in (keys, values) lists.
                        for keys, values in b._chunks():
                            n += len(keys)
                    else:
                        c = b.cursor()
                        item = c.first()
                        while item is not None:
                            k, v = item
                            n += 1
                            acc += k[0] + v[0]
                            item = c.next()
                secs, cpu = time.perf_counter() - start, time.process_time() - cpu0
                out["d"] = {"seconds": secs, "cpu_seconds": cpu, "ops": n}
                if batch:
                    # The Go and C loops also add each key's and value's first
                    # byte. In Python that arithmetic costs about as much as
                    # the scan, so it is a second pass, timed on its own and
                    # reported beside the table; its sum is the check.
                    first = operator.itemgetter(0)
                    n = 0
                    start, cpu0 = time.perf_counter(), time.process_time()
                    with db.begin() as tx:
                        for keys, values in tx.bucket(bench)._chunks():
                            n += len(keys)
                            acc += sum(map(first, keys)) + sum(map(first, values))
                    out["d"]["with_checksum_seconds"] = time.perf_counter() - start
                    out["d"]["with_checksum_cpu_seconds"] = time.process_time() - cpu0
            out["d"]["check"] = f"keys={n} sum={acc}"
        path.unlink()
    if "e" in only and not batch:
        path = fresh("e")
        keys = _read_fixed(data_dir / "e.keys", KEY_LEN)
        values = _read_fixed(data_dir / "e.values", VALUE_LEN)
        with bolt.open(str(path)) as db:
            with db.begin(write=True) as tx:
                tx.create_bucket(bench)
            start, cpu0 = time.perf_counter(), time.process_time()
            for k, v in zip(keys, values):
                with db.begin(write=True) as tx:
                    tx.bucket(bench).put(k, v)
            secs, cpu = time.perf_counter() - start, time.process_time() - cpu0
        out["e"] = {"seconds": secs, "cpu_seconds": cpu, "ops": len(keys), "check": count(path)}
        path.unlink()
    if "f" in only:
        path = fresh("f")
        images = _read_images(data_dir / "f.images")
        with bolt.open(str(path)) as db:
            if not batch:
                start, cpu0 = time.perf_counter(), time.process_time()
                for fields in images:
                    name, created, updated, digest, media, size = fields[:6]
                    with db.begin(write=True) as tx:
                        ns = tx.create_bucket_if_not_exists(b"v1").create_bucket_if_not_exists(b"default")
                        ib = ns.create_bucket_if_not_exists(b"images").create_bucket(name)
                        ib.put(b"createdat", created)
                        ib.put(b"updatedat", updated)
                        if len(fields) > 6:
                            lb = ib.create_bucket(b"labels")
                            for i in range(6, len(fields), 2):
                                lb.put(fields[i], fields[i + 1])
                        tb = ib.create_bucket(b"target")
                        tb.put(b"digest", digest)
                        tb.put(b"mediatype", media)
                        tb.put(b"size", size)
                secs, cpu = time.perf_counter() - start, time.process_time() - cpu0
                with db.begin() as tx:
                    n = sum(1 for _ in tx.bucket(b"v1").bucket(b"default").bucket(b"images").keys())
                out["f_create"] = {"seconds": secs, "cpu_seconds": cpu, "ops": len(images), "check": f"images={n}"}
            else:
                # Load untimed in one tx so the batch variant can time the read.
                with db.begin(write=True) as tx:
                    allb = tx.create_bucket(b"v1").create_bucket(b"default").create_bucket(b"images")
                    for fields in images:
                        ib = allb.create_bucket(fields[0])
                        ib.put_many([(b"createdat", fields[1]), (b"updatedat", fields[2])])
                        if len(fields) > 6:
                            ib.create_bucket(b"labels").put_many(zip(fields[6::2], fields[7::2]))
                        ib.create_bucket(b"target").put_many(
                            [(b"digest", fields[3]), (b"mediatype", fields[4]), (b"size", fields[5])])
            n_images = n_labels = total = 0
            start, cpu0 = time.perf_counter(), time.process_time()
            with db.begin() as tx:
                allb = tx.bucket(b"v1").bucket(b"default").bucket(b"images")
                if batch:
                    # The store's record reader (store/image_records.py): the
                    # bucket cut into records in C as the engine walks it; the
                    # loop still touches every field.
                    for record in image_records.read_all(allb):
                        n_images += 1
                        total += (len(record.name) + len(record.created) + len(record.updated)
                                  + len(record.digest) + len(record.media_type) + len(record.size))
                        if record.labels:
                            n_labels += len(record.labels)
                            for key, value in record.labels:
                                total += len(key) + len(value)
                else:
                    c = allb.cursor()
                    item = c.first()
                    while item is not None:
                        name, v = item
                        item = c.next()
                        if v is not None:
                            continue
                        ib = allb.bucket(name)
                        n_images += 1
                        total += len(name) + len(ib.get(b"createdat")) + len(ib.get(b"updatedat"))
                        lb = ib.bucket(b"labels")
                        if lb is not None:
                            lc = lb.cursor()
                            li = lc.first()
                            while li is not None:
                                n_labels += 1
                                total += len(li[0]) + len(li[1])
                                li = lc.next()
                        tb = ib.bucket(b"target")
                        total += len(tb.get(b"digest")) + len(tb.get(b"mediatype")) + len(tb.get(b"size"))
            secs, cpu = time.perf_counter() - start, time.process_time() - cpu0
            out["f_read"] = {"seconds": secs, "cpu_seconds": cpu, "ops": n_images,
                             "check": f"images={n_images} labels={n_labels} bytes={total}"}
        path.unlink()
    return out


# ---------------------------------------------------------------- builds

def _newest_mtime(paths: list[pathlib.Path]) -> float:
    return max(p.stat().st_mtime for p in paths)


def build_go(build_dir: pathlib.Path) -> pathlib.Path:
    return benchlib.build_go_program(benchlib.BENCH_DIR / "engine" / "bbolt_bench.go", build_dir,
                                     "the bbolt reference", "the bbolt driver")


def build_core(build_dir: pathlib.Path) -> pathlib.Path:
    native = benchlib.REPO / "native"
    sources = sorted(native.glob("*.c"))
    if not sources:
        raise BenchError("native/*.c not found: the C core has not landed yet")
    driver = benchlib.BENCH_DIR / "engine" / "core_bench.c"
    binary = build_dir / "core_bench"
    inputs = [driver, native / "bolt.h", *sources, *native.glob("*.h")]
    if binary.exists() and binary.stat().st_mtime >= _newest_mtime(inputs):
        return binary
    cc = os.environ.get("CC", "cc")
    cmd = [cc, "-std=c11", "-O2", "-D_GNU_SOURCE", "-Wall", "-Wextra", f"-I{native}",
           "-o", str(binary), str(driver), *map(str, sources), "-lpthread"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise BenchError("building the C core driver failed: " + proc.stderr.strip()[-2000:].replace("\n", " | "))
    return binary


# ---------------------------------------------------------------- orchestration

# Workloads that run in one process of a driver; each group gets a fresh one.
# Why: CPython's allocator keeps the arenas a million-key load leaves behind
# half used, and later rows allocate among them: row f's read took 30.7-31.2
# ms in a Python worker that had loaded row a or b first, 20.4-21.2 ms in a
# fresh one.
# c and d read the file b loads, so they stay with b. Every driver, Go and C
# included, runs the same groups.
PROCESS_GROUPS = [("a",), ("b", "c", "d"), ("e",), ("f",)]


def _grouped(only: set[str], run: Callable[[str], dict[str, Any]]) -> Callable[[], dict[str, Any]]:
    """A driver run: one process per workload group that has a wanted
    workload, the results merged."""
    def run_all() -> dict[str, Any]:
        merged: dict[str, Any] = {}
        for group in PROCESS_GROUPS:
            wanted = [w for w in group if w in only]
            if wanted:
                merged.update(run(",".join(wanted)))
        return merged
    return run_all


def _run_json(cmd: list[str], env: Optional[dict[str, str]] = None) -> dict[str, Any]:
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise BenchError(f"{pathlib.Path(cmd[0]).name} failed: " + proc.stderr.strip()[-1500:].replace("\n", " | "))
    try:
        return json.loads(proc.stdout.strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError) as exc:
        raise BenchError(f"{cmd[0]} printed no JSON result ({exc})") from exc


def _best(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Fastest of the repeated runs for every workload."""
    best: dict[str, Any] = {}
    for name in {w for run in runs for w in run}:
        mine = [run[name] for run in runs if name in run]
        best[name] = dict(min(mine, key=lambda r: r["seconds"]),
                          cpu_seconds=min(r.get("cpu_seconds", r["seconds"]) for r in mine),
                          runs=[r["seconds"] for r in mine],
                          cpu_runs=[r.get("cpu_seconds") for r in mine])
    return best


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller sizes (20k bulk load, 200k keys, ...)")
    ap.add_argument("--only", default="", help="comma-separated workloads: " + ",".join(WORKLOADS))
    ap.add_argument("--dir", default=None, help="directory for data and database files (put every side on one disk)")
    ap.add_argument("--repeat", type=int, default=1, help="run each driver N times and keep the fastest")
    ap.add_argument("--seed", type=int, default=20240611)
    ap.add_argument("--skip", default="", help="drivers to skip: go,core,python")
    ap.add_argument("--worker", choices=["python"], help=argparse.SUPPRESS)
    ap.add_argument("--variant", choices=["batch", "plain"], default="batch", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    only = set(w.strip() for w in args.only.split(",") if w.strip()) or set(WORKLOADS)
    unknown = only - set(WORKLOADS)
    if unknown:
        print(f"engine_bench: unknown workload(s) {sorted(unknown)}; choose from {WORKLOADS}", file=sys.stderr)
        return 2

    if args.worker:
        result = python_worker(pathlib.Path(args.data), pathlib.Path(args.dir), only, args.variant == "batch")
        print(json.dumps(result))
        return 0

    try:
        return _orchestrate(args, only)
    except BenchError as exc:
        print(f"engine_bench: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("engine_bench: interrupted", file=sys.stderr)
        return 130


def _orchestrate(args: argparse.Namespace, only: set[str]) -> int:
    sizes = QUICK_SIZES if args.quick else FULL_SIZES
    skip = set(s.strip() for s in args.skip.split(",") if s.strip())
    base = pathlib.Path(args.dir) if args.dir else benchlib.OUT_DIR
    base.mkdir(parents=True, exist_ok=True)
    build_dir = benchlib.OUT_DIR / "build"
    build_dir.mkdir(parents=True, exist_ok=True)
    work = pathlib.Path(tempfile.mkdtemp(prefix="engine-bench-", dir=base))
    try:
        data_dir = work / "data"
        db_dir = work / "db"
        data_dir.mkdir()
        db_dir.mkdir()
        t0 = time.perf_counter()
        write_data(data_dir, sizes, args.seed)
        print(f"data generated in {time.perf_counter() - t0:.1f} s under {work}", file=sys.stderr)

        drivers: dict[str, Callable[[], dict[str, Any]]] = {}
        if "go" not in skip:
            go_bin = build_go(build_dir)
            drivers["bbolt"] = _grouped(only, lambda w: _run_json(
                [str(go_bin), "-data", str(data_dir), "-dir", str(db_dir), "-only", w]))
        if "core" not in skip:
            core_bin = build_core(build_dir)
            drivers["core"] = _grouped(only, lambda w: _run_json([str(core_bin), str(data_dir), str(db_dir), w]))
        if "python" not in skip:
            env = benchlib.python_env()
            for variant in ("batch", "plain"):
                cmd = [sys.executable, str(pathlib.Path(__file__).resolve()), "--worker", "python",
                       "--variant", variant, "--data", str(data_dir), "--dir", str(db_dir), "--only"]
                drivers[f"python_{variant}"] = _grouped(only, lambda w, c=cmd: _run_json(c + [w], env))

        # Rounds interleave the drivers so a burst of outside load hits all sides alike.
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in drivers}
        loads: dict[str, list[str]] = {name: [] for name in drivers}
        for i in range(args.repeat):
            for name, run in drivers.items():
                loads[name].append(benchlib.load_average())
                t0 = time.perf_counter()
                runs[name].append(run())
                print(f"{name}: run {i + 1}/{args.repeat} took {time.perf_counter() - t0:.1f} s "
                      f"(load before: {loads[name][-1]})", file=sys.stderr)
        results: dict[str, dict[str, Any]] = {name: _best(r) for name, r in runs.items()}
        facts = benchlib.machine_facts(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    mismatches = _check_agreement(results)
    markdown = render(results, sizes, facts, args, mismatches)
    print(markdown)
    payload = {"facts": facts, "sizes": sizes, "seed": args.seed, "repeat": args.repeat,
               "quick": args.quick, "results": results, "check_mismatches": mismatches,
               "load_before_each_run": loads}
    path = benchlib.write_outputs("engine", payload, markdown)
    print(f"\nJSON: {path}", file=sys.stderr)
    return 1 if mismatches else 0


def _check_agreement(results: dict[str, dict[str, Any]]) -> list[str]:
    """Every driver must have stored and read back the same data."""
    problems = []
    names = sorted({w for r in results.values() for w in r})
    for w in names:
        checks = {d: r[w]["check"] for d, r in results.items() if w in r}
        if len(set(checks.values())) > 1:
            problems.append(f"{w}: " + "; ".join(f"{d}: {c}" for d, c in checks.items()))
    return problems


def render(results: dict[str, dict[str, Any]], sizes: dict[str, int], facts: dict[str, Any],
           args: argparse.Namespace, mismatches: list[str]) -> str:
    parts = [
        "### Engine: bbolt 1.3.6 (Go) vs boltimages" + (" (--quick)" if args.quick else ""),
        "",
        "Wall-clock time:",
        "",
        _table(results, sizes, "seconds"),
        "",
        "CPU time (user + system of the driver process; excludes waiting for the disk and for the "
        "CPU on a busy machine, so it is the steadier figure for rows a-d and the reads):",
        "",
        _table(results, sizes, "cpu_seconds"),
        "",
        "Ratio = bbolt time / boltimages time (> 1.0: boltimages is faster). "
        f"Fastest of {args.repeat} run(s) per driver (drivers interleaved); same seeded keys on every side; "
        f"{KEY_LEN}-byte keys, {VALUE_LEN}-byte values; every commit fsyncs (default durability on both sides); "
        "page cache warm (files freshly written).",
    ]
    d_sum = results.get("python_batch", {}).get("d", {})
    d_ref = results.get("bbolt", {}).get("d", {})
    if "with_checksum_seconds" in d_sum and d_ref:
        parts += [
            "",
            "Row d, Python batch: the timed scan hands every key and value to Python as bytes "
            "(the batch scan behind Bucket.items). Adding each item's first byte in Python as well, as the Go and C loops "
            f"do, takes {_beside(d_ref, d_sum['with_checksum_seconds'], d_sum['with_checksum_cpu_seconds'])}.",
        ]
    # rows where the C core is timed with its batch call and the loop that
    # mirrors Go's is printed beside it (per_item_*)
    core_notes = {
        "d": "Row d, C core: the timed scan is the engine's batch scan (bolt_cursor_next_each, 1,024 items "
             "per call, adding each key's and value's first byte as Go does). One bolt_cursor_next call per "
             "item",
        "f_read": "Row f read, C core: timed with the engine's subtree walk (bolt_bucket_walk_each over the "
                  "images bucket, two levels deep). Go's way, a cursor over the images with a bucket lookup "
                  "and a get per field",
    }
    for key, text in core_notes.items():
        core = results.get("core", {}).get(key, {})
        ref = results.get("bbolt", {}).get(key, {})
        if "per_item_seconds" in core and ref:
            parts += ["", f"{text}, on its own open of the file, takes "
                          f"{_beside(ref, core['per_item_seconds'], core['per_item_cpu_seconds'])}."]
    parts += ["", benchlib.facts_markdown(facts)]
    if mismatches:
        parts += ["", "**CHECK MISMATCH** (drivers disagree on what was stored/read):"] + [f"- {m}" for m in mismatches]
    return "\n".join(parts)


def _beside(ref: dict[str, Any], seconds: float, cpu_seconds: float) -> str:
    """A time measured beside a reference result, as the notes under the
    tables print it: wall time (ratio; CPU time, ratio)."""
    return (f"{benchlib.fmt_seconds(seconds)} ({benchlib.fmt_ratio(ref['seconds'], seconds)}; CPU "
            f"{benchlib.fmt_seconds(cpu_seconds)}, {benchlib.fmt_ratio(ref['cpu_seconds'], cpu_seconds)})")


def _table(results: dict[str, dict[str, Any]], sizes: dict[str, int], metric: str) -> str:
    def secs(driver: str, w: str) -> Optional[float]:
        r = results.get(driver, {}).get(w)
        return r.get(metric) if r else None

    labels = {k: f"{v:,}" for k, v in sizes.items()}
    header = ["workload", "bbolt 1.3.6 (Go)", "boltimages C core", "ratio",
              "boltimages Python (batch calls)", "ratio", "boltimages Python (one call per item)", "ratio"]
    rows = []
    for key, label in ROWS:
        if all(key not in r for r in results.values()):
            continue
        ref = secs("bbolt", key)
        core = secs("core", key)
        batch = secs("python_batch", key)
        if key in ("c", "e", "f_create"):
            batch = None  # no batch call fits (c: gets are one call each; e, f_create: a tx per item)
        plain = secs("python_plain", key)
        rows.append([label.format(**labels), benchlib.fmt_seconds(ref), benchlib.fmt_seconds(core),
                     benchlib.fmt_ratio(ref, core), benchlib.fmt_seconds(batch), benchlib.fmt_ratio(ref, batch),
                     benchlib.fmt_seconds(plain), benchlib.fmt_ratio(ref, plain)])
    return benchlib.markdown_table(header, rows)


if __name__ == "__main__":
    sys.exit(main())
