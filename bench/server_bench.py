#!/usr/bin/env python3
"""Server benchmarks: a private real containerd vs `boltimages serve`.

The same Go client (bench/server/images_client.go, built now against Debian's
containerd API packages) runs the same Images API workload against

  * containerd 1.6 (root; config version 2 with root, state and socket in a
    temporary directory and the CRI plugin disabled), and
  * boltimages serve (database and socket in a temporary directory),

one server at a time, so each has the machine to itself. Both keep their
metadata in a bbolt-format file that fsyncs every commit (containerd's
default bbolt options; boltimages' default, no_sync off).

Steps, in order, in namespace "bench":
  version            2,000 Version calls (no store work: the gRPC floor)
  create_concurrent  create N images (default 10,000) from 16 clients
  list_all           List with no filter (N images), --list-reps times
  list_all_replayed  the same List --list-reps times from a Go server in the
                     client that replays the answer and does no work, on a
                     connection that first carries N/16 Creates as the
                     List's did: the floor under list_all, with the client
                     as it is there
  list_filter        List with labels."bench.group"==3 (N/10 match)
  get                2,000 Gets by name
  get_concurrent     N Gets by name from 16 clients (default 10,000)
  update             2,000 Updates of the labels (field mask "labels")
  list_after_write   List with no filter right after an Update, --list-reps
                     times (only the List is timed): each List must include
                     the write just made, so no answer framed before it
                     can be sent as it is
  create_single      2,000 Creates from one client
  delete             delete those 2,000 images, one client
After each server's workload, on the same server: the floor under its List
(images_client -only list-floor): its List and the same answer replayed by a Go
server that does no work, in turn (the client gets warmer with every List, so
the second of two series gains), and the client's own decoding of it.
Then the RSS of each server holding 100,000 images: one database written
offline in containerd's layout with our engine, copied to each server, then a
filtered List and 2,000 Gets to touch it (--no-rss-containerd: ours only).

Output: a Markdown table of containerd time / boltimages time (> 1.0 means
boltimages is faster) and JSON under bench/out/.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pathlib
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from typing import Any, Optional

import benchlib
from benchlib import BenchError

NAMESPACE = b"bench"
STEP_LABELS = {
    "version": "Version (empty call: the gRPC floor, per call)",
    "create_concurrent": "Create {images} images, {clients} concurrent clients (per call)",
    "list_all": "List, {images} images, no filter (per List)",
    "list_filter": "List, {images} images, label filter → {match} (per List)",
    "get": "Get by name (per call)",
    "get_concurrent": "Get by name, {clients} concurrent clients (per call)",
    "update": "Update labels (per call)",
    "list_after_write": "List, {images} images, right after an Update (per List)",
    "create_single": "Create, 1 client (per call)",
    "delete": "Delete, 1 client (per call)",
}


# ---------------------------------------------------------------- builds

def build_client(build_dir: pathlib.Path) -> pathlib.Path:
    return benchlib.build_go_program(benchlib.BENCH_DIR / "server" / "images_client.go", build_dir,
                                     "the benchmark client", "the Images client")


# ---------------------------------------------------------------- servers

class Server:
    """A server process we started; stopped with SIGTERM, then SIGKILL."""

    def __init__(self, name: str, cmd: list[str], socket: pathlib.Path, log: pathlib.Path,
                 env: Optional[dict[str, str]] = None) -> None:
        self.name = name
        self.socket = socket
        self.log = log
        self._log_fh = open(log, "wb")
        self.proc = subprocess.Popen(cmd, stdout=self._log_fh, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)
        deadline = time.monotonic() + 60
        while not socket.exists():
            if self.proc.poll() is not None:
                raise BenchError(f"{name} exited with status {self.proc.returncode} before serving; "
                                 f"last log line: {self._last_log_line()}")
            if time.monotonic() > deadline:
                self.stop()
                raise BenchError(f"{name} did not create {socket} within 60 s")
            time.sleep(0.05)

    def _last_log_line(self) -> str:
        lines = self.log.read_text(errors="replace").strip().splitlines()
        return lines[-1] if lines else "(empty log)"

    def rss(self) -> dict[str, int]:
        """VmRSS, VmHWM (peak), RssAnon (heap) and RssFile (mapped file pages,
        mostly the database's mmap) in KiB of the server process."""
        out = {}
        for line in pathlib.Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            key = line.split(":")[0]
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                out[key] = int(line.split()[1])
        return out

    def cpu_seconds(self) -> float:
        """User + system CPU time the server process has used so far (all threads)."""
        fields = pathlib.Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks  # utime, stime

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log_fh.close()


def start_containerd(work: pathlib.Path) -> Server:
    if not shutil.which("containerd"):
        raise BenchError("containerd is not installed")
    if os.geteuid() != 0:
        raise BenchError("a private containerd needs root")
    config = work / "containerd.toml"
    config.write_text(
        "version = 2\n"
        f'root = "{work / "root"}"\n'
        f'state = "{work / "state"}"\n'
        'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
        "[grpc]\n"
        f'  address = "{work / "containerd.sock"}"\n'
        "[ttrpc]\n"
        f'  address = "{work / "containerd.sock.ttrpc"}"\n')
    return Server("containerd", ["containerd", "--config", str(config)], work / "containerd.sock",
                  work / "containerd.log")


def _boltimages_env() -> dict[str, str]:
    return benchlib.python_env()


def start_boltimages(work: pathlib.Path, db_path: Optional[pathlib.Path] = None) -> Server:
    db_path = db_path or work / "meta.db"
    socket = work / "boltimages.sock"
    config = work / "boltimages.toml"
    config.write_text(
        "version = 2\n"
        "[grpc]\n"
        f'  address = "{socket}"\n'
        "[metadata]\n"
        f'  path = "{db_path}"\n'
        "[debug]\n"
        '  level = "warn"\n')
    cmd = [sys.executable, "-m", "boltimages.cli", "serve", "--config", str(config)]
    return Server("boltimages", cmd, socket, work / "boltimages.log", env=_boltimages_env())


def containerd_version() -> str:
    return benchlib._first_line(["containerd", "--version"])


# ---------------------------------------------------------------- workload

def run_client(client: pathlib.Path, server: Server, args: argparse.Namespace,
               extra: Optional[list[str]] = None) -> list[dict[str, Any]]:
    """The client's steps; each carries the server's CPU seconds during it."""
    socket = server.socket
    cmd = [str(client), "-socket", str(socket), "-images", str(args.images), "-ops", str(args.ops),
           "-concurrency", str(args.concurrency), "-list-reps", str(args.list_reps),
           "-server-pid", str(server.proc.pid), *(extra or [])]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise BenchError(f"client against {socket.name} failed: {proc.stderr.strip()[-1500:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def bench_server(name: str, start, client: pathlib.Path, base: pathlib.Path,
                 args: argparse.Namespace) -> dict[str, Any]:
    work = pathlib.Path(tempfile.mkdtemp(prefix=f"{name}-", dir=base))
    server = start(work)
    try:
        t0 = time.perf_counter()
        cpu0 = server.cpu_seconds()
        steps = run_client(client, server, args)
        cpu = server.cpu_seconds() - cpu0
        rss = server.rss()
        wall = time.perf_counter() - t0
        print(f"{name}: workload took {wall:.1f} s", file=sys.stderr)
        # After the workload (its N images are still there): the floor under
        # a List, measured through the same client (images_client -only list-floor)
        floor = {s["name"]: s for s in run_client(client, server, args, ["-only", "list-floor"])}
    finally:
        server.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return {"steps": {s["name"]: s for s in steps}, "rss_after_workload_kib": rss, "server_cpu_seconds": cpu,
            "workload_wall_seconds": wall, "floor": floor}


# ---------------------------------------------------------------- 100k images for RSS

def _go_time(unix_seconds: int) -> bytes:
    return struct.pack(">bqih", 1, unix_seconds + 62135596800, 0, -1)


def write_image_db(path: pathlib.Path, count: int) -> None:
    """containerd 1.6's layout (db version 3) with `count` images, the same
    shape images_client creates, written in one transaction by our engine."""
    bolt = benchlib.import_boltimages("bolt")
    codec = benchlib.import_boltimages("store.codec")

    with bolt.open(str(path)) as db, db.begin(write=True) as tx:
        v1 = tx.create_bucket(b"v1")
        v1.put(b"version", codec.encode_varint(3))
        images = v1.create_bucket(NAMESPACE).create_bucket(b"images")
        stamp = _go_time(1_700_000_000)
        for i in range(count):
            name = f"registry.example.com/bench/app-{i:06d}:v1"
            ib = images.create_bucket(name.encode())
            ib.put(b"createdat", stamp)
            ib.put(b"updatedat", stamp)
            ib.create_bucket(b"labels").put_many([
                (b"bench.group", str(i % 10).encode()),
                (b"org.opencontainers.source", f"https://example.com/src/app-{i}".encode())])
            ib.create_bucket(b"target").put_many([
                (b"digest", ("sha256:" + hashlib.sha256(name.encode()).hexdigest()).encode()),
                (b"mediatype", b"application/vnd.oci.image.manifest.v1+json"),
                (b"size", codec.encode_varint(1000 + i % 5000))])


def bench_rss(client: pathlib.Path, base: pathlib.Path, args: argparse.Namespace,
              servers: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {"images": args.rss_images}
    seed = pathlib.Path(tempfile.mkdtemp(prefix="rss-seed-", dir=base))
    try:
        db = seed / "meta.db"
        t0 = time.perf_counter()
        write_image_db(db, args.rss_images)
        out["db_bytes"] = db.stat().st_size
        print(f"rss: wrote {args.rss_images} images in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        probe_args = argparse.Namespace(**vars(args))
        probe_args.images = args.rss_images
        for name in servers:
            work = pathlib.Path(tempfile.mkdtemp(prefix=f"rss-{name}-", dir=base))
            try:
                if name == "containerd":
                    target = work / "root" / "io.containerd.metadata.v1.bolt"
                    target.mkdir(parents=True)
                    shutil.copy(db, target / "meta.db")
                    server = start_containerd(work)
                else:
                    shutil.copy(db, work / "meta.db")
                    server = start_boltimages(work)
                try:
                    idle = server.rss()
                    steps = run_client(client, server, probe_args, ["-only", "rss-probe"])
                    out[name] = {"idle_kib": idle, "after_probe_kib": server.rss(),
                                 "probe": {s["name"]: s for s in steps}}
                finally:
                    server.stop()
            finally:
                shutil.rmtree(work, ignore_errors=True)
    finally:
        shutil.rmtree(seed, ignore_errors=True)
    return out


def _fastest(runs: list[dict[str, Any]]) -> dict[str, Any]:
    best = dict(runs[-1])
    best["steps"] = {}
    for step in runs[0]["steps"]:
        mine = [r["steps"][step] for r in runs if step in r["steps"]]
        best["steps"][step] = dict(min(mine, key=lambda s: s["seconds"]), rounds=[s["seconds"] for s in mine])
    best["floor"] = {step: min((r["floor"][step] for r in runs), key=lambda s: s["seconds"])
                     for step in runs[0]["floor"]}
    best["server_cpu_seconds"] = min(r["server_cpu_seconds"] for r in runs)
    best["server_cpu_rounds"] = [r["server_cpu_seconds"] for r in runs]
    return best


# ---------------------------------------------------------------- report

def render(results: dict[str, Any], args: argparse.Namespace, facts: dict[str, Any]) -> str:
    ref = results.get("containerd", {}).get("steps", {})
    ours = results.get("boltimages", {}).get("steps", {})
    fill = {"images": f"{args.images:,}", "clients": args.concurrency, "match": f"{args.images // 10:,}"}

    def per_call(step: Optional[dict[str, Any]]) -> Optional[float]:
        return step["seconds"] / step["ops"] if step else None

    def p99(step: Optional[dict[str, Any]]) -> str:
        return f"{step['p99_ms']:.2f} ms" if step else "—"

    def cpu(step: Optional[dict[str, Any]]) -> str:
        # server CPU per call: steadier than wall time on a shared machine
        return benchlib.fmt_seconds(step["server_cpu_seconds"] / step["ops"]) \
            if step and "server_cpu_seconds" in step else "—"

    rows = []
    for key, label in STEP_LABELS.items():
        a, b = ref.get(key), ours.get(key)
        if a is None and b is None:
            continue
        ops = (a or b)["ops"]
        rows.append([label.format(**fill), f"{ops:,}", benchlib.fmt_seconds(per_call(a)),
                     benchlib.fmt_seconds(per_call(b)), benchlib.fmt_ratio(per_call(a), per_call(b)),
                     p99(a), p99(b), cpu(a), cpu(b)])
    header = ["step", "calls", f"containerd {results.get('containerd_version', '')}".strip(), "boltimages", "ratio",
              "containerd p99", "boltimages p99", "containerd CPU/call", "boltimages CPU/call"]
    parts = ["### Images API: real containerd vs boltimages serve" + (" (--quick)" if args.quick else ""), "",
             benchlib.markdown_table(header, rows), "",
             "Ratio = containerd time / boltimages time (> 1.0: boltimages is faster). Per-call times are "
             "wall time / calls (for the concurrent steps: wall time of all clients / calls). "
             "CPU/call = the server process's user + system CPU time during the step / calls "
             "(all threads; for List after an Update it includes the untimed Updates). "
             f"Fastest of {args.repeat} round(s) per step, servers alternating. "
             "Both servers' databases fsync every commit (real durability: containerd's default bbolt "
             "options; boltimages with no_sync off). Same Go gRPC client over a unix socket for both; "
             "one server at a time."]
    mem = []
    for name in ("containerd", "boltimages"):
        floor = results.get(name, {}).get("floor")
        if floor:
            mem.append(f"{name}: the floor under a List of {fill['images']} images, after the workload, "
                       f"{floor['list_all']['ops']} Lists each, in turn: its own List "
                       f"{benchlib.fmt_seconds(per_call(floor['list_all']))}; the same answer replayed by a Go "
                       f"server that does no work {benchlib.fmt_seconds(per_call(floor['list_floor']))}; "
                       f"the client's own decoding of it, no transfer, "
                       f"{benchlib.fmt_seconds(per_call(floor['list_decode']))}")
    ref_list = per_call(ref.get("list_all"))
    for name in ("containerd", "boltimages"):
        replay = per_call(results.get(name, {}).get("steps", {}).get("list_all_replayed"))
        if replay:
            mem.append(f"the floor under the List step, on the {name} run: right after that step, the same "
                       f"client listing {args.list_reps} times from a Go server that replays {name}'s answer "
                       f"and does no work, on a connection that first carried "
                       f"{args.images // args.concurrency:,} Creates as the step's did, "
                       f"{benchlib.fmt_seconds(replay)} per List"
                       + (f", so {benchlib.fmt_ratio(ref_list, replay)} is the most any server could show "
                          f"on that List row" if ref_list else ""))
    for name in ("containerd", "boltimages"):
        if "server_cpu_seconds" in results.get(name, {}):
            mem.append(f"{name} server CPU time for the whole workload: "
                       f"{results[name]['server_cpu_seconds']:.1f} s (user + system, all threads; "
                       f"least of {len(results[name].get('server_cpu_rounds', [1]))} round(s))")
    for name in ("containerd", "boltimages"):
        rss = results.get(name, {}).get("rss_after_workload_kib")
        if rss:
            mem.append(f"{name} RSS after the workload: {rss.get('VmRSS', 0) / 1024:.0f} MiB "
                       f"({rss.get('RssAnon', 0) / 1024:.0f} MiB heap + {rss.get('RssFile', 0) / 1024:.0f} MiB "
                       f"mapped files; peak {rss.get('VmHWM', 0) / 1024:.0f} MiB)")
    rss = results.get("rss")
    if rss:
        for name in ("boltimages", "containerd"):
            if name in rss:
                r = rss[name]
                after = r["after_probe_kib"]
                mem.append(f"{name} RSS holding {rss['images']:,} images ({rss['db_bytes'] / 2**20:.0f} MiB file): "
                           f"idle {r['idle_kib'].get('VmRSS', 0) / 1024:.0f} MiB, after a filtered List and "
                           f"{r['probe']['get']['ops']:,} Gets {after.get('VmRSS', 0) / 1024:.0f} MiB "
                           f"= {after.get('RssAnon', 0) / 1024:.0f} MiB heap + "
                           f"{after.get('RssFile', 0) / 1024:.0f} MiB mapped file pages "
                           f"(peak {after.get('VmHWM', 0) / 1024:.0f} MiB)")
    if results.get("rss_error"):
        mem.append(f"RSS measurement failed: {results['rss_error']}")
    if mem:
        parts += [""] + [f"- {m}" for m in mem]
    parts += ["", benchlib.facts_markdown(facts)]
    return "\n".join(parts)


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="2,000 images, 500 calls per step, 20,000 for RSS")
    ap.add_argument("--images", type=int, default=None, help="images for List/Get/Update (default 10,000)")
    ap.add_argument("--ops", type=int, default=None, help="calls for Get/Update/Create/Delete (default 2,000)")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--list-reps", type=int, default=10)
    ap.add_argument("--rss-images", type=int, default=None, help="images for the RSS measurement (default 100,000)")
    ap.add_argument("--no-rss-containerd", dest="rss_containerd", action="store_false",
                    help="measure only our server's RSS, not containerd's on the same file")
    ap.add_argument("--skip", default="", help="comma-separated: containerd, boltimages, rss")
    ap.add_argument("--dir", default=None, help="directory for both servers' files (same disk)")
    ap.add_argument("--repeat", type=int, default=1,
                    help="rounds, alternating the servers; each step keeps its fastest round")
    ap.add_argument("--keep", action="store_true", help="keep the servers' directories (logs, databases)")
    args = ap.parse_args(argv)
    args.images = args.images or (2_000 if args.quick else 10_000)
    args.ops = args.ops or (500 if args.quick else 2_000)
    args.rss_images = args.rss_images or (20_000 if args.quick else 100_000)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    try:
        return _run(args, skip)
    except BenchError as exc:
        print(f"server_bench: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("server_bench: interrupted", file=sys.stderr)
        return 130


def _run(args: argparse.Namespace, skip: set[str]) -> int:
    base = pathlib.Path(args.dir) if args.dir else benchlib.OUT_DIR
    base.mkdir(parents=True, exist_ok=True)
    build_dir = benchlib.OUT_DIR / "build"
    build_dir.mkdir(parents=True, exist_ok=True)
    client = build_client(build_dir)
    results: dict[str, Any] = {}
    version = containerd_version().split()
    results["containerd_version"] = version[2] if len(version) >= 3 else ""
    servers = [(name, start) for name, start in (("containerd", start_containerd), ("boltimages", start_boltimages))
               if name not in skip]
    # Rounds alternate the servers so a burst of outside load hits both alike;
    # each step keeps its fastest round.
    rounds: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in servers}
    for i in range(args.repeat):
        for name, start in servers:
            print(f"{name}: round {i + 1}/{args.repeat} (load before: {benchlib.load_average()})", file=sys.stderr)
            rounds[name].append(bench_server(name, start, client, base, args))
    for name, runs in rounds.items():
        results[name] = _fastest(runs)
    if "rss" not in skip:
        servers = ["boltimages"] + (["containerd"] if args.rss_containerd else [])
        try:
            results["rss"] = bench_rss(client, base, args, servers)
        except BenchError as exc:
            # Keep the timings already taken; say what went wrong.
            results["rss_error"] = str(exc)
            print(f"server_bench: RSS measurement failed: {exc}", file=sys.stderr)
    facts = benchlib.machine_facts(base)
    facts["containerd"] = containerd_version()
    markdown = render(results, args, facts)
    print(markdown)
    path = benchlib.write_outputs("server", {"facts": facts, "args": vars(args), "results": results}, markdown)
    print(f"\nJSON: {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
