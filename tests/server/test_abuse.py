"""Hostile HTTP/2 clients against a running `boltimages serve` on a 3,000-image store.

Each attack runs a few seconds on the local socket (h2_attack.py writes the
frames) while a liveness client (liveness.py, a process of its own) calls Version,
Images/Get and Images/List (List runs in the worker pool, the others on the
loop thread) every 50 ms. Every attack must leave every liveness call
answered within 1 s, the server's peak RSS (VmHWM of a server started for that attack) under
300 MiB, and the store (one for all) passing `boltimages check` at the end.

Sizes scale with BOLTIMAGES_SLOW_BUDGET (default 1: the counts below; each
attack also stops at its time bound). With BOLTIMAGES_ABUSE_REPORT=FILE each
attack appends one JSON line (outcome, peak memory, worst liveness latency):
the README's table is made from that.
"""

from __future__ import annotations

import json
import os
import pathlib
import resource
import select
import socket
import subprocess
import sys
import time
from typing import Callable, Iterator

import grpc
import pytest

from boltimages.server.h2 import frames as f
from tests.server.conftest import REPO, Served, serve_env
from tests.server.h2_attack import Attacker, Outcome, grpc_message, huffman_field, is_refused, request_block

IMAGES = 3000
NAMESPACE = "default"
RSS_BUDGET = 300 << 20
LIVENESS_BUDGET = 1.0
#: the liveness client watches at least this long per attack, and this long after it
OBSERVE_MIN = 1.0
OBSERVE_AFTER = 0.3
SCALE = float(os.environ.get("BOLTIMAGES_SLOW_BUDGET") or 1)
LIST = "/containerd.services.images.v1.Images/List"
CREATE = "/containerd.services.images.v1.Images/Create"
WATCH = "/grpc.health.v1.Health/Watch"
REFLECTION = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"


def hold(seconds: float) -> None:
    """An attack that keeps its connections as they are for a while (the
    liveness client runs meanwhile); nothing waits on anything here."""
    time.sleep(seconds)


def scaled(n: int) -> int:
    return max(1, int(n * SCALE))


def image_name(i: int) -> str:
    return f"docker.io/library/app-{i:05d}:latest"


def make_store(path: pathlib.Path) -> None:
    from boltimages import bolt
    from boltimages.store import codec, image_records
    from boltimages.tools import records
    stamp = records.time_to_json(codec.encode_time(codec.Timestamp(1_700_000_000, 0)))
    with bolt.open(str(path)) as db, db.begin(write=True) as tx:
        records.ensure_schema(tx, 3)
        images = records.images_bucket(tx, NAMESPACE, create=True)
        for i in range(IMAGES):
            _, record = records.image_from_json({
                "namespace": NAMESPACE, "name": image_name(i), "labels": {"org.example.index": str(i)},
                "target": {"digest": "sha256:" + f"{i:064x}", "size": 1000 + i,
                           "mediaType": "application/vnd.oci.image.manifest.v1+json"},
                "createdAt": stamp, "updatedAt": stamp})
            image_records.replace_record(images, record)


class Target:
    def __init__(self, served: Served) -> None:
        self.served = served
        self.path = served.socket
        self.pid = served.proc.pid

    def reset_peak(self) -> None:
        # "5" resets the peak resident set size (VmHWM) of the process (proc(5))
        with open(f"/proc/{self.pid}/clear_refs", "w") as fh:
            fh.write("5")

    def cpu_seconds(self) -> float:
        """User + system CPU the server has used so far (proc(5) stat fields 14-15)."""
        with open(f"/proc/{self.pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def peak(self) -> int:
        with open(f"/proc/{self.pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        raise AssertionError("no VmHWM")


class Liveness:
    """The liveness client (liveness.py) as a child process, for the length of a ``with``."""

    def __init__(self, target: Target) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.server.liveness", target.served.target,
                                      image_name(1234)], env=serve_env(), cwd=str(REPO), text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], 30)
        line = self.proc.stdout.readline() if ready else ""
        if line.strip() != "ready":
            self.proc.kill()
            _, err = self.proc.communicate(timeout=10)
            raise AssertionError(f"the liveness client did not get going: {line}{err[-2000:]}")
        self.latencies: list[float] = []
        self.failures: list[str] = []

    def __enter__(self) -> "Liveness":
        return self

    def __exit__(self, *exc: object) -> None:
        out, err = self.proc.communicate("stop\n", timeout=30)
        assert self.proc.returncode == 0, err[-2000:]
        result = json.loads(out.strip().splitlines()[-1])
        self.latencies, self.failures = result["latencies"], result["failures"]

    @property
    def worst(self) -> float:
        return max(self.latencies, default=0.0)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    db = tmp_path_factory.mktemp("abuse-store") / "meta.db"
    make_store(db)
    return db


#: serve flags for one attack: 24 workers leave 16 for streams whatever the
#: machine's CPU count, so 100 Watch streams always meet the cap
SERVE_ARGS = {"test_long_lived_streams": ["--workers", "24"]}
STREAM_CAP_WITH_24_WORKERS = 16


@pytest.fixture
def target(store: pathlib.Path, tmp_path: pathlib.Path, request: pytest.FixtureRequest) -> Iterator[Target]:
    """A fresh server per attack (so each peak RSS is that attack's own), all on one store."""
    served = Served(tmp_path, SERVE_ARGS.get(request.node.name, []), socket=str(tmp_path / "bi.sock"),
                    db=str(store)).wait_ready()
    yield Target(served)
    if served.proc.poll() is None:
        assert served.stop() == 0, served.log()[-3000:]


def under_attack(target: Target, name: str, attack: Callable[[], str]) -> str:
    """Run ``attack`` with the liveness client alongside; assert the budgets; returns the outcome."""
    assert target.served.proc.poll() is None, "the server is gone"
    live = Liveness(target)
    target.reset_peak()
    cpu = target.cpu_seconds()
    started = time.monotonic()
    with live:
        outcome = attack()
        elapsed = time.monotonic() - started
        # what the attack left behind (queued calls, buffers) must not stall
        # the server either: keep watching a while, at least a second in all
        hold(max(OBSERVE_AFTER, OBSERVE_MIN - elapsed))
    peak = target.peak()
    row = {"attack": name, "outcome": outcome, "peak_rss_mib": round(peak / (1 << 20), 1),
           "worst_liveness_ms": round(live.worst * 1000, 1), "liveness_calls": len(live.latencies),
           "liveness_failures": len(live.failures), "seconds": round(elapsed, 2),
           "server_cpu_s": round(target.cpu_seconds() - cpu, 2)}
    report = os.environ.get("BOLTIMAGES_ABUSE_REPORT")
    if report:
        with open(report, "a") as fh:
            fh.write(json.dumps(row) + "\n")
    assert target.served.proc.poll() is None, f"the server died:\n{target.served.log()[-3000:]}"
    assert not live.failures, f"{name}: liveness failed: {live.failures[:5]} ({row})"
    assert len(live.latencies) >= 3, f"{name}: too few liveness calls to tell ({row})"
    assert live.worst < LIVENESS_BUDGET, f"{name}: a liveness call took {live.worst:.3f} s ({row})"
    assert peak < RSS_BUDGET, f"{name}: peak RSS {peak >> 20} MiB ({row})"
    return outcome


# ---------------------------------------------------------------- the attacks
def calmed(a: Attacker, any_goaway: bool = False) -> Outcome:
    """Read until the server closes the attacker's connection, close it, and require the
    GOAWAY an abusive client earns: ENHANCE_YOUR_CALM (or any GOAWAY, when asked)."""
    outcome = a.read_until_closed(3)
    a.close()
    if any_goaway:
        assert outcome.goaway is not None, outcome.describe()
    else:
        assert outcome.goaway == f.ENHANCE_YOUR_CALM, outcome.describe()
    return outcome


def test_rapid_reset(target: Target) -> None:
    """HEADERS+RST_STREAM pairs on Images/List (CVE-2023-44487): reset calls never run."""
    pairs = scaled(20_000)
    block = request_block(LIST)
    body = grpc_message(b"")

    def attack() -> str:
        sent = connections = 0
        calm = 0
        deadline = time.monotonic() + 6
        while sent < pairs and time.monotonic() < deadline:
            a = Attacker(target.path)
            connections += 1
            while sent < pairs and not a.outcome.closed and time.monotonic() < deadline:
                batch = []
                for _ in range(250):
                    sid = a.stream_id()
                    batch.append(f.frame(f.HEADERS, f.FLAG_END_HEADERS, sid, block)
                                 + f.frame(f.DATA, f.FLAG_END_STREAM, sid, body) + f.rst_stream(sid, f.CANCEL))
                if not a.send(b"".join(batch), timeout=2):
                    break
                sent += len(batch)
                a.read()
            a.read_until_closed(0.5)
            calm += a.outcome.goaway == f.ENHANCE_YOUR_CALM
            a.close()
        assert calm, "the server never said ENHANCE_YOUR_CALM"
        return f"GOAWAY ENHANCE_YOUR_CALM on {calm} of {connections} connections ({sent} pairs sent)"
    under_attack(target, "rapid reset", attack)


def test_idle_stream_flood(target: Target) -> None:
    """A client opening streams past the limit; then 100k streams opened and
    never finished, held open together over as many connections as it takes."""
    streams = scaled(100_000)
    block = request_block(CREATE)

    def attack() -> str:
        greedy = Attacker(target.path)
        greedy.send(b"".join(f.frame(f.HEADERS, f.FLAG_END_HEADERS, greedy.stream_id(), block)
                             for _ in range(5000)), timeout=3)
        outcome = calmed(greedy)
        held: list[Attacker] = []
        opened = 0
        deadline = time.monotonic() + 8
        try:
            while opened < streams and time.monotonic() < deadline:
                a = Attacker(target.path)
                held.append(a)
                # as many as the server allows on one connection (a client must not exceed it)
                per_connection = min(1000, streams - opened)
                if not a.send(b"".join(f.frame(f.HEADERS, f.FLAG_END_HEADERS, a.stream_id(), block)
                                       for _ in range(per_connection)), timeout=2):
                    break
                opened += per_connection
                a.read(0.05)
            for a in held:
                a.read(0.2)
            refused = sum(a.outcome.resets.get(f.REFUSED_STREAM, 0) for a in held)
        finally:
            for a in held:
                a.close()
        return (f"one connection past its limit: {outcome.resets.get(f.REFUSED_STREAM, 0)} REFUSED_STREAM, "
                f"then {outcome.describe()}; {opened} streams over {len(held)} connections: "
                f"{refused} refused (the server's budget)")
    under_attack(target, "idle stream flood", attack)


def test_initial_window_churn(target: Target) -> None:
    """SETTINGS_INITIAL_WINDOW_SIZE changed 2,000 times over as many open streams as allowed."""
    block = request_block(CREATE)

    def attack() -> str:
        a = Attacker(target.path)
        a.send(b"".join(f.frame(f.HEADERS, f.FLAG_END_HEADERS, a.stream_id(), block) for _ in range(1000)))
        changes = scaled(2000)
        frames = b"".join(f.settings({f.SETTINGS_INITIAL_WINDOW_SIZE: 65535 + (i % 2) * 1_000_000})
                          for i in range(changes))
        a.send(frames, timeout=3)
        outcome = calmed(a)
        return f"{outcome.describe()} after {outcome.settings_acks} SETTINGS acks"
    under_attack(target, "SETTINGS initial window churn", attack)


def test_ping_flood_without_reading(target: Target) -> None:
    """PINGs as fast as the socket takes them, acks never read."""
    def attack() -> str:
        a = Attacker(target.path)
        ping = f.frame(f.PING, 0, 0, b"12345678") * 4096
        deadline = time.monotonic() + 3
        sent = 0
        while time.monotonic() < deadline and a.send(ping, timeout=1):
            sent += 4096
        outcome = calmed(a)
        return f"{outcome.describe()} after {outcome.pings} acks ({sent} PINGs sent)"
    under_attack(target, "PING flood, acks unread", attack)


def test_empty_continuation_flood(target: Target) -> None:
    def attack() -> str:
        a = Attacker(target.path)
        block = request_block(LIST)
        a.send(f.frame(f.HEADERS, 0, a.stream_id(), block))
        a.send(f.frame(f.CONTINUATION, 0, 1, b"") * scaled(100_000), timeout=3)
        outcome = calmed(a)
        return outcome.describe()
    under_attack(target, "empty CONTINUATION flood", attack)


def test_empty_data_flood(target: Target) -> None:
    def attack() -> str:
        a = Attacker(target.path)
        sid = a.stream_id()
        a.send(f.frame(f.HEADERS, f.FLAG_END_HEADERS, sid, request_block(CREATE)))
        a.send(f.frame(f.DATA, 0, sid, b"") * scaled(100_000), timeout=3)
        outcome = calmed(a)
        return outcome.describe()
    under_attack(target, "empty DATA flood", attack)


def test_megabyte_huffman_header(target: Target) -> None:
    """A 1 MB Huffman-coded header value: refused before it is decoded."""
    def attack() -> str:
        a = Attacker(target.path)
        block = request_block(LIST) + huffman_field(b"x-big", 1 << 20)
        first, rest = block[:16384], block[16384:]
        frames = [f.frame(f.HEADERS, 0, 1, first)]
        for start in range(0, len(rest), 16384):
            last = start + 16384 >= len(rest)
            frames.append(f.frame(f.CONTINUATION, f.FLAG_END_HEADERS if last else 0, 1, rest[start:start + 16384]))
        a.send(b"".join(frames), timeout=3)
        outcome = calmed(a, any_goaway=True)
        return outcome.describe()
    under_attack(target, "1 MB Huffman header value", attack)


def test_huffman_headers_at_the_limit(target: Target) -> None:
    """Requests each carrying a Huffman-coded value just under the header list limit."""
    field = huffman_field(b"x-big", 40 << 10)

    def attack() -> str:
        # windows wide open, so each List's answer can arrive whole
        a = Attacker(target.path, settings={f.SETTINGS_INITIAL_WINDOW_SIZE: 1 << 30})
        a.send(f.window_update(0, 1 << 30))
        requests = scaled(60)
        for _ in range(requests):
            sid = a.stream_id()
            block = request_block(LIST) + field
            frames = [f.frame(f.HEADERS, 0, sid, block[:16384])]
            rest = block[16384:]
            for start in range(0, len(rest), 16384):
                last = start + 16384 >= len(rest)
                frames.append(f.frame(f.CONTINUATION, (f.FLAG_END_HEADERS if last else 0), sid,
                                      rest[start:start + 16384]))
            frames.append(f.frame(f.DATA, f.FLAG_END_STREAM, sid, grpc_message(b"")))
            if not a.send(b"".join(frames), timeout=3):
                break
            a.read()
        a.read_until_closed(1)
        a.close()
        return f"{a.outcome.statuses.get('0', 0)} of {requests} answered" + (
            f", {a.outcome.describe()}" if a.outcome.goaway is not None else "")
    under_attack(target, "40 KiB Huffman header values", attack)


def test_streamed_requests_answers_unread(target: Target) -> None:
    """A bidi stream (reflection) fed requests while its answers are never read."""
    from grpc_reflection.v1alpha import reflection_pb2
    message = grpc_message(reflection_pb2.ServerReflectionRequest(list_services="").SerializeToString())

    def attack() -> str:
        a = Attacker(target.path, settings={f.SETTINGS_INITIAL_WINDOW_SIZE: 1 << 30})
        a.send(f.window_update(0, 1 << 30))
        sid = a.stream_id()
        a.send(f.frame(f.HEADERS, f.FLAG_END_HEADERS, sid, request_block(REFLECTION)))
        per_frame = 16384 // len(message)
        frame = f.frame(f.DATA, 0, sid, message * per_frame)
        sent = 0
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline and a.send(frame * 16, timeout=1):
            sent += 16 * len(frame)
        a.close()
        assert sent < 200 << 20, "the server took everything"
        return f"client held at {sent >> 10} KiB sent"
    under_attack(target, "streamed requests, answers unread", attack)


def test_many_lists_answers_unread(target: Target) -> None:
    """Hundreds of concurrent Images/List calls (about a megabyte each) never read."""
    def attack() -> str:
        a = Attacker(target.path, settings={f.SETTINGS_INITIAL_WINDOW_SIZE: 1 << 30})
        a.send(f.window_update(0, 1 << 30))
        block = request_block(LIST)
        body = grpc_message(b"")
        calls = scaled(500)
        a.send(b"".join(f.frame(f.HEADERS, f.FLAG_END_HEADERS, sid, block) + f.frame(f.DATA, f.FLAG_END_STREAM, sid, body)
                        for sid in (a.stream_id() for _ in range(calls))))
        hold(3)
        a.close()
        return f"{calls} Lists held back while unread"
    under_attack(target, "concurrent Lists, answers unread", attack)


def test_partial_messages(target: Target) -> None:
    """Many unary streams each holding part of a 16 MiB message."""
    def attack() -> str:
        a = Attacker(target.path)
        block = request_block(CREATE)
        chunk = b"\x00" * 16000
        sent = 0
        deadline = time.monotonic() + 4
        for _ in range(scaled(200)):
            sid = a.stream_id()
            data = f.frame(f.HEADERS, f.FLAG_END_HEADERS, sid, block) + f.frame(
                f.DATA, 0, sid, b"\x00" + struct_len(16 << 20) + chunk)
            data += f.frame(f.DATA, 0, sid, chunk) * 32
            if time.monotonic() > deadline or not a.send(data, timeout=1):
                break
            sent += len(data)
        a.close()
        assert sent < 100 << 20
        return f"client held at {sent >> 10} KiB sent"
    under_attack(target, "partial 16 MiB messages", attack)


def struct_len(n: int) -> bytes:
    return n.to_bytes(4, "big")


def test_long_lived_streams(target: Target) -> None:
    """100 Health/Watch streams held open: pooled calls (List) still get a thread."""
    def attack() -> str:
        a = Attacker(target.path)
        block = request_block(WATCH)
        body = grpc_message(b"")
        a.send(b"".join(f.frame(f.HEADERS, f.FLAG_END_HEADERS, sid, block) + f.frame(f.DATA, f.FLAG_END_STREAM, sid, body)
                        for sid in (a.stream_id() for _ in range(scaled(100)))))
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and a.read(0.2):
            pass
        a.close()
        refused = a.outcome.statuses.get(str(grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]), 0)
        assert refused == max(0, scaled(100) - STREAM_CAP_WITH_24_WORKERS), a.outcome.statuses
        return f"{scaled(100) - refused} streams served, {refused} RESOURCE_EXHAUSTED"
    under_attack(target, "100 Health/Watch streams", attack)


def test_connect_burst(target: Target) -> None:
    """1,000 connects at once: the backlog takes them all."""
    def attack() -> str:
        socks = []
        refused = 0
        try:
            for _ in range(scaled(1000)):
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.setblocking(False)
                try:
                    s.connect(target.path)
                except OSError as exc:
                    if not is_refused(exc):
                        raise
                    refused += 1
                socks.append(s)
        finally:
            for s in socks:
                s.close()
        assert refused == 0, f"{refused} connects refused"
        return f"{len(socks)} connected, {refused} refused"
    under_attack(target, "1,000 connects at once", attack)


def test_descriptor_exhaustion(target: Target) -> None:
    """RLIMIT_NOFILE reached: accept pauses, one log line, and service resumes after."""
    def attack() -> str:
        fds = len(os.listdir(f"/proc/{target.pid}/fd"))
        old = resource.prlimit(target.pid, resource.RLIMIT_NOFILE)
        log_before = target.served.log()
        socks = []
        try:
            resource.prlimit(target.pid, resource.RLIMIT_NOFILE, (fds + 5, old[1]))
            for _ in range(50):
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.setblocking(False)
                try:
                    s.connect(target.path)
                except OSError as exc:
                    if not is_refused(exc):
                        raise
                socks.append(s)
            hold(2.5)
        finally:
            resource.prlimit(target.pid, resource.RLIMIT_NOFILE, old)
            for s in socks:
                s.close()
        lines = [line for line in target.served.log()[len(log_before):].splitlines()
                 if "cannot accept" in line or "Traceback" in line]
        assert len(lines) <= 2, lines[:5]
        assert not [line for line in lines if "Traceback" in line]
        return f"{len(lines)} log line(s), accepting resumed"
    under_attack(target, "descriptor exhaustion (EMFILE)", attack)
    with Liveness(target):  # a new connection is accepted and served again
        pass


def test_store_passes_check_afterwards(store: pathlib.Path) -> None:
    res = subprocess.run([sys.executable, "-m", "boltimages", "check", "--db", str(store)],
                         env=serve_env(), capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
