"""Fixtures: `python -m boltimages serve` as a real child process on a temp socket."""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import threading
import time
import uuid
from typing import Iterator, Optional, Sequence

import grpc
import pytest

from tests.helpers import wait_until

REPO = pathlib.Path(__file__).resolve().parents[2]
NAMESPACE_KEY = "containerd-namespace"


def serve_env() -> dict[str, str]:
    from tests.helpers import child_env

    return child_env()


def serve_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "boltimages", "serve", *args]


def run_serve(*args: str, timeout: float = 30.0) -> subprocess.CompletedProcess:
    """Run `serve` expecting it to exit by itself (start-up errors)."""
    return subprocess.run(serve_argv(*args), env=serve_env(), cwd=str(REPO), capture_output=True,
                          text=True, timeout=timeout)


def health_ok(address: str, timeout: float = 1.0) -> bool:
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    try:
        with grpc.insecure_channel(address) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=timeout)
            return reply.status == health_pb2.HealthCheckResponse.SERVING
    except grpc.RpcError:
        return False


class Served:
    """One running server: its process, socket, db path and log file."""

    def __init__(self, base: pathlib.Path, args: Sequence[str], socket: Optional[str] = None,
                 db: Optional[str] = None, use_flags: bool = True) -> None:
        self.base = base
        self.socket = socket or str(base / "bi.sock")
        self.db = db or str(base / "meta.db")
        self.log_path = base / f"serve-{time.monotonic_ns()}.log"
        argv = serve_argv(*(["--socket", self.socket, "--db", self.db] if use_flags else []), *args)
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(argv, env=serve_env(), cwd=str(REPO), stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    @property
    def target(self) -> str:
        return "unix://" + self.socket

    def wait_ready(self, timeout: float = 30.0) -> "Served":
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"serve exited {self.proc.returncode}:\n{self.log()}")
            if os.path.exists(self.socket) and health_ok(self.target):
                return self
            time.sleep(0.05)
        raise AssertionError(f"serve not ready within {timeout}s:\n{self.log()}")

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def channel(self) -> grpc.Channel:
        return grpc.insecure_channel(self.target)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
                raise AssertionError(f"serve ignored signal {sig}:\n{self.log()}")
        self._log.close()
        return self.proc.returncode


@pytest.fixture
def serve(tmp_path: pathlib.Path):
    """Factory: serve(*extra_args, socket=..., db=...) -> ready Served; all stopped at teardown."""
    started: list[Served] = []

    def make(*args: str, socket: Optional[str] = None, db: Optional[str] = None, ready: bool = True,
             use_flags: bool = True) -> Served:
        s = Served(tmp_path, args, socket, db, use_flags)
        started.append(s)
        return s.wait_ready() if ready else s

    yield make
    for s in started:
        if s.proc.poll() is None:
            s.proc.kill()
            s.proc.wait(5)


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[Served]:
    """One shared server per test module (tests use their own namespaces)."""
    s = Served(tmp_path_factory.mktemp("serve"), []).wait_ready()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def channel(server: Served) -> Iterator[grpc.Channel]:
    ch = server.channel()
    yield ch
    ch.close()


def md(namespace: Optional[str]) -> list[tuple[str, str]]:
    return [] if namespace is None else [(NAMESPACE_KEY, namespace)]


class Collector:
    """A Subscribe stream read on a thread, known to be registered on the server.

    A subscription only sees events published after the server registered it,
    and the client cannot tell when that happened; so the collector also
    listens for a private warm-up topic (filters are OR-ed) and publishes it
    until one arrives. Warm-up envelopes are kept out of ``got``.
    """

    def __init__(self, channel: grpc.Channel, filters: Sequence[str] = ()) -> None:
        from boltimages.api.containerd.services.events.v1 import events_pb2, events_pb2_grpc
        stub = events_pb2_grpc.EventsStub(channel)
        self.warmup = f"/warmup/w{uuid.uuid4().hex[:12]}"
        wanted = list(filters) + [f'topic=="{self.warmup}"'] if filters else []
        self.call = stub.Subscribe(events_pb2.SubscribeRequest(filters=wanted), timeout=120)
        self.got: list = []
        self.error: Optional[grpc.RpcError] = None
        self._warm = threading.Event()
        self._stub = stub
        self._markers: set[str] = set()
        self._marker_count = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self._warm.is_set() and self.error is None and time.monotonic() < deadline:
            stub.Publish(events_pb2.PublishRequest(topic=self.warmup), metadata=md("warmup"), timeout=10)
            self._warm.wait(0.1)
        assert self._warm.is_set(), f"subscription never delivered its warm-up event ({self.error})"

    def _run(self) -> None:
        try:
            for envelope in self.call:
                if envelope.topic == self.warmup:
                    self._markers.add(envelope.namespace)
                    self._warm.set()
                elif not envelope.topic.startswith("/warmup/"):
                    self.got.append(envelope)
        except grpc.RpcError as err:
            self.error = err

    def wait_for(self, n: int, timeout: float = 10.0) -> list:
        wait_until(lambda: len(self.got) >= n, timeout, 0.02)
        return self.got

    def settle(self, timeout: float = 10.0) -> list:
        """Every event published before this call, delivered: a subscriber
        receives events in order, so once a marker published now is back,
        nothing published earlier (a duplicate, say) is still on its way."""
        from boltimages.api.containerd.services.events.v1 import events_pb2
        self._marker_count += 1
        marker = f"settle{self._marker_count}"
        self._stub.Publish(events_pb2.PublishRequest(topic=self.warmup), metadata=md(marker), timeout=10)
        assert wait_until(lambda: marker in self._markers, timeout, 0.01), f"marker never arrived ({self.error})"
        return self.got

    def close(self) -> None:
        self.call.cancel()
        self.thread.join(5)
