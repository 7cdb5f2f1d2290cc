"""Start and stop the two gRPC servers the compat suite compares.

A private real containerd (its own root, state and socket under a temp dir, so
it never touches /var/lib/containerd) and our `boltimages serve`. Both are
plain child processes: started, polled until their unix socket answers a real
RPC, stopped with SIGTERM (SIGKILL only if they hang), and their output is kept
in a log file so a failing test can show what the daemon said.
"""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import time
from typing import Optional, Sequence

import grpc

from tests.compat.releases import DEFAULT, Release
from tests.helpers import child_env

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]


class DaemonError(RuntimeError):
    """A daemon did not start or answer; the message carries its log tail."""


def _probe(address: str, method: str, timeout: float) -> bool:
    """True once `method` on the unix socket returns any answer at all.

    Any status other than UNAVAILABLE/DEADLINE_EXCEEDED proves the server is
    serving (for example UNIMPLEMENTED still means it is up).
    """
    with grpc.insecure_channel("unix://" + address) as channel:
        call = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
        try:
            call(b"", timeout=timeout)
            return True
        except grpc.RpcError as err:
            return err.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


class Daemon:
    """One child server process with a log file and a unix socket."""

    probe_method = "/containerd.services.version.v1.Version/Version"

    def __init__(self, name: str, argv: Sequence[str], address: str, log_path: pathlib.Path,
                 env: Optional[dict] = None, cwd: Optional[str] = None) -> None:
        self.name = name
        self.argv = list(argv)
        self.address = address
        self.log_path = log_path
        self.env = env
        self.cwd = cwd
        self.proc: Optional[subprocess.Popen] = None
        self.db_path: Optional[pathlib.Path] = None   # the metadata file this daemon serves

    def start(self, timeout: float = 20.0) -> "Daemon":
        self.launch()
        return self.wait_ready(timeout)

    def launch(self) -> "Daemon":
        """Start the process without waiting for it to serve."""
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=self.env, cwd=self.cwd,
                                         start_new_session=True)
        finally:
            log.close()
        return self

    def serving(self) -> bool:
        return os.path.exists(self.address) and _probe(self.address, self.probe_method, 1.0)

    def wait_ready(self, timeout: float = 20.0) -> "Daemon":
        """Wait until the socket answers; DaemonError (with the log tail) if it exits or times out."""
        assert self.proc is not None, "launch() first"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise DaemonError(f"{self.name} exited with status {self.proc.returncode} "
                                  f"before serving {self.address}\n{self.log_tail()}")
            if os.path.exists(self.address) and _probe(self.address, self.probe_method, 1.0):
                return self
            time.sleep(0.05)
        self.stop()
        raise DaemonError(f"{self.name} did not answer on {self.address} within {timeout}s\n{self.log_tail()}")

    def stop(self, grace: float = 10.0) -> Optional[int]:
        """SIGTERM, wait up to `grace` seconds, then SIGKILL. Returns the exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return f"({self.name} log {self.log_path} unreadable)"
        tail = text.splitlines()[-lines:]
        return f"--- last {len(tail)} lines of {self.name} log {self.log_path} ---\n" + "\n".join(tail)


#: containerd's garbage collector scheduled only when a client asks for a
#: synchronous collection: no collection at start, none after deletions or
#: writes (each threshold out of reach, the first run 1,000 hours away)
_GC_ON_REQUEST_ONLY = (
    '[plugins."io.containerd.gc.v1.scheduler"]\n'
    '  startup_delay = "1000h"\n'
    "  deletion_threshold = 1000000000\n"
    "  mutation_threshold = 1000000000\n"
)


def containerd_config(base: pathlib.Path, root: Optional[pathlib.Path] = None,
                      release: Release = DEFAULT, gc_on_request_only: bool = False) -> pathlib.Path:
    """Write the release's config.toml (version 2 or 3) that keeps everything under `base`.

    ``gc_on_request_only``: see _GC_ON_REQUEST_ONLY. For files whose every
    commit a test must know: a collection commits on its own schedule, and
    SIGTERM can end containerd inside that commit, leaving its pages written
    and its meta not."""
    root = root or base / "root"
    state = base / "state"
    address = base / "containerd.sock"
    disabled = ", ".join(f'"{p}"' for p in release.disabled_plugins)
    # The keys used here mean the same in config version 2 (1.6/1.7) and 3 (2.x).
    text = (
        f"version = {release.config_version}\n"
        f'root = "{root}"\n'
        f'state = "{state}"\n'
        f"disabled_plugins = [{disabled}]\n"
        "[grpc]\n"
        f'  address = "{address}"\n'
        "[ttrpc]\n"
        f'  address = "{address}.ttrpc"\n'
        "[debug]\n"
        '  address = ""\n'
        '  level = "debug"\n'
        "[metrics]\n"
        '  address = ""\n'
    ) + (_GC_ON_REQUEST_ONLY if gc_on_request_only else "")
    path = base / "config.toml"
    path.write_text(text)
    return path


def containerd_daemon(containerd: str, base: pathlib.Path, root: Optional[pathlib.Path] = None,
                      release: Release = DEFAULT, gc_on_request_only: bool = False) -> Daemon:
    """An (unstarted) private containerd under `base`; its socket is base/containerd.sock.

    `containerd` is the binary; `release` chooses its config and puts its bin dir first
    on PATH so it starts its own shim (`gc_on_request_only`: see containerd_config)."""
    base.mkdir(parents=True, exist_ok=True)
    config = containerd_config(base, root, release, gc_on_request_only)
    daemon = Daemon(f"containerd {release.version}", [containerd, "--config", str(config)],
                    str(base / "containerd.sock"), base / "containerd.log", env=release.env())
    daemon.db_path = containerd_meta_db(root or base / "root")
    return daemon


def containerd_meta_db(root: pathlib.Path) -> pathlib.Path:
    return root / "io.containerd.metadata.v1.bolt" / "meta.db"


def boltimages_daemon(base: pathlib.Path, db: pathlib.Path, extra: Sequence[str] = ()) -> Daemon:
    """An (unstarted) `python -m boltimages serve` on base/boltimages.sock and `db`."""
    base.mkdir(parents=True, exist_ok=True)
    address = str(base / "boltimages.sock")
    env = dict(os.environ)
    # Run the same boltimages the tests import: the dev tree (PYTHONPATH=plugin) or an
    # installed copy (CI's `pip install .`; plugin/ there has no built extension).
    env.update(child_env())
    argv = [sys.executable, "-m", "boltimages", "serve", "--socket", address, "--db", str(db), *extra]
    return Daemon("boltimages", argv, address, base / "boltimages.log", env=env, cwd=str(REPO_ROOT))
