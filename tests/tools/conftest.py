"""Fixtures for the offline-tools suite: real containerd metadata files and a CLI runner.

A containerd root is built once per session by a private containerd (the compat
suite's daemon helper and OCI archive maker): small OCI images imported with
`ctr images import`, tags, labels, a second namespace with namespace labels.
Each test gets its own copy of that root, so tests may damage or rewrite it.
"""

from __future__ import annotations

import hashlib
import json
import pathlib
import shutil
import subprocess
import sys
from dataclasses import dataclass
from typing import Callable, Iterator, Optional

import pytest

from tests.helpers import child_env, require_root, require_tool

REPO = pathlib.Path(__file__).resolve().parents[2]
META_REL = pathlib.Path("io.containerd.metadata.v1.bolt") / "meta.db"
CONTENT_REL = pathlib.Path("io.containerd.content.v1.content")

#: images of the session root: (namespace, ref, seed)
IMAGES = [
    ("default", "docker.io/library/alpha:1", "alpha"),
    ("default", "docker.io/library/beta:2", "beta"),
    ("default", "example.com/team/gamma:latest", "gamma"),
    ("other", "example.com/other/delta:v0", "delta"),
]


@dataclass
class Result:
    rc: int
    stdout: str
    stderr: str


def run_cli(*args: str, input_text: Optional[str] = None, env: Optional[dict] = None) -> Result:
    """The real `boltimages` command line in a child process (exit codes and stderr as users see them)."""
    full_env = child_env()
    full_env.pop("BOLTIMAGES_DEBUG", None)
    if env:
        full_env.update(env)
    done = subprocess.run([sys.executable, "-m", "boltimages.cli", *args], input=input_text,
                          capture_output=True, text=True, env=full_env, timeout=300)
    return Result(done.returncode, done.stdout, done.stderr)


@pytest.fixture
def cli() -> Callable[..., Result]:
    return run_cli


#: one valid image record as `export` writes it (non-UTC zone, labels, annotations)
IMAGE = {"kind": "image", "namespace": "default", "name": "example.com/a:1",
         "target": {"mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": "sha256:" + "ab" * 32, "size": 1234,
                    "annotations": {"org.opencontainers.image.ref.name": "1"}},
         "labels": {"team": "x", "dotted.key/with": "v=1"},
         "createdAt": "2021-03-04T05:06:07.123456789Z",
         "updatedAt": "2022-12-31T23:59:59.000000001+05:30"}


def file_sha256(path: pathlib.Path) -> str:
    """The file's bytes as a SHA-256 hex digest: how tests prove a command left a file untouched."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_jsonl(path: pathlib.Path, *docs: dict) -> pathlib.Path:
    """An `import` input file holding ``docs``, one JSON object a line."""
    path.write_text("".join(json.dumps(d) + "\n" for d in docs))
    return path


@pytest.fixture
def small_db(cli, tmp_path: pathlib.Path) -> pathlib.Path:
    """A metadata file made by `import` alone (no containerd needed): IMAGE and namespace labels."""
    src = write_jsonl(tmp_path / "in.jsonl", {"kind": "namespace", "namespace": "default",
                                              "labels": {"owner": "me"}}, IMAGE)
    db = tmp_path / "meta.db"
    res = cli("import", "--db", str(db), "-i", str(src))
    assert res.rc == 0, res.stderr
    return db


@dataclass
class Root:
    """A containerd root directory on disk (no daemon running on it)."""

    path: pathlib.Path

    @property
    def db(self) -> pathlib.Path:
        return self.path / META_REL

    @property
    def content(self) -> pathlib.Path:
        return self.path / CONTENT_REL


def _ctr(ctr: str, sock: str, ns: str, *args: str, stdin: Optional[bytes] = None) -> str:
    done = subprocess.run([ctr, "--address", sock, "-n", ns, *args], input=stdin, capture_output=True,
                          timeout=60)
    if done.returncode != 0:
        raise AssertionError(f"ctr {' '.join(args)}: {done.stderr.decode(errors='replace')}")
    return done.stdout.decode()


def populate(ctr: str, sock: str, work: pathlib.Path) -> None:
    from tests.compat.oci_archive import build_image, write_archive
    for ns, ref, seed in IMAGES:
        archive = write_archive(work / f"{seed}.tar", [build_image(ref, seed)])
        _ctr(ctr, sock, ns, "images", "import", "--no-unpack", str(archive))
    _ctr(ctr, sock, "default", "images", "tag", "docker.io/library/alpha:1", "docker.io/library/alpha:latest")
    _ctr(ctr, sock, "default", "images", "label", "docker.io/library/beta:2", "team=storage", "tier=gold")
    _ctr(ctr, sock, "other", "namespaces", "label", "other", "owner=ops")


@pytest.fixture(scope="session")
def session_root(tmp_path_factory) -> Iterator[Root]:
    require_root()
    containerd = require_tool("containerd")
    ctr = require_tool("ctr")
    from tests.compat.daemons import containerd_daemon
    base = tmp_path_factory.mktemp("tools-containerd")
    # the salvage tests compare with both commits of the file: no collection
    # may commit on its own and be cut short by the stop (see containerd_config)
    daemon = containerd_daemon(containerd, base, gc_on_request_only=True)
    daemon.start()
    try:
        populate(ctr, daemon.address, base)
    finally:
        daemon.stop()
    root = Root(base / "root")
    assert both_commits_read_whole(root.db), "containerd stopped inside a commit"
    yield root


def both_commits_read_whole(db: pathlib.Path) -> bool:
    """Whether the trees of both metas of ``db`` read without a lost page."""
    from boltimages.tools import rawpages
    raw = rawpages.RawFile(db.read_bytes())
    return all(not rawpages.TolerantReader(raw, meta).read().losses for meta in raw.metas if meta.valid)


@pytest.fixture
def root(session_root: Root, tmp_path: pathlib.Path) -> Root:
    """A private copy of the session root for one test."""
    dest = tmp_path / "root"
    shutil.copytree(session_root.path, dest, symlinks=True)
    return Root(dest)


@pytest.fixture
def start_containerd(tmp_path: pathlib.Path) -> Iterator[Callable[[Root], "object"]]:
    """Start a private containerd on a given root; stopped at teardown."""
    containerd = require_tool("containerd")
    from tests.compat.daemons import containerd_daemon
    started = []

    def start(root: Root):
        daemon = containerd_daemon(containerd, tmp_path / f"cd{len(started)}", root.path)
        started.append(daemon)
        daemon.start()
        return daemon

    yield start
    for daemon in started:
        daemon.stop()


def ctr_on(daemon, ns: str, *args: str) -> str:
    return _ctr(require_tool("ctr"), daemon.address, ns, *args)
