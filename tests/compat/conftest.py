"""Fixtures for the compatibility suite: a private real containerd, our server, ctr, archives.

Everything runs against real programs. Every fixture that starts or talks to a
real containerd depends on `release`, a session fixture parametrized over
releases.RELEASES (1.6.20, 1.7.24, 2.1.9): each test that uses one runs once
per release, with that release's own containerd, config, shim and ctr, and
pytest groups the tests by release so each release's session daemon starts
once. Our server is shared: the suite uses fresh namespaces per test.
Missing containerd/ctr or missing root skips locally and fails in CI
(tests.helpers honours BOLTIMAGES_REQUIRE_COMPAT).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pathlib
import shutil
from typing import Callable, Iterator, Optional

import pytest

from tests.compat.ctr_runner import Ctr
from tests.compat.daemons import (Daemon, DaemonError, boltimages_daemon, containerd_daemon,
                                   containerd_meta_db)
from tests.compat.grpc_client import Client
from tests.compat.releases import DEFAULT, RELEASES, Release
from tests.helpers import require_root, require_tool

_daemons_in_use: list[Daemon] = []


def _start(daemon: Daemon) -> Daemon:
    try:
        daemon.start()
    except DaemonError as exc:
        pytest.fail(str(exc), pytrace=False)
    _daemons_in_use.append(daemon)
    return daemon


def _stop(daemon: Daemon) -> None:
    daemon.stop()
    if daemon in _daemons_in_use:
        _daemons_in_use.remove(daemon)


def seeded_root(release: Release, base: pathlib.Path, seed: Callable[[Daemon], None]) -> pathlib.Path:
    """A containerd root that a private `release` daemon wrote: `seed(daemon)` runs while it
    serves under base/seed; it is stopped before this returns the root."""
    daemon = _start(containerd_daemon(release.containerd, base / "seed", None, release))
    try:
        seed(daemon)
    finally:
        _stop(daemon)
    assert daemon.db_path is not None
    return daemon.db_path.parents[1]


@contextlib.contextmanager
def real_and_ours(release: Release, base: pathlib.Path, seed_root: Optional[pathlib.Path] = None,
                  prepare: Optional[Callable[[pathlib.Path], None]] = None) -> Iterator[tuple[Daemon, Daemon]]:
    """A private `release` containerd and our server side by side under `base`, both stopped
    on exit. With `seed_root` each serves its own copy of that containerd root (`prepare`
    may change each copy first), so ours finds the content and snapshotter stores beside
    its meta.db; without it both start on empty files."""
    roots: dict[str, pathlib.Path] = {}
    for side in ("real", "ours") if seed_root is not None else ():
        roots[side] = base / side / "root"
        shutil.copytree(seed_root, roots[side], symlinks=True)
        if prepare is not None:
            prepare(roots[side])
    real = _start(containerd_daemon(release.containerd, base / "real", roots.get("real"), release))
    try:
        ours = _start(_our_daemon(base / "ours", containerd_meta_db(roots["ours"]) if roots
                                  else base / "ours" / "meta.db"))
    except BaseException:
        _stop(real)
        raise
    try:
        yield real, ours
    finally:
        _stop(ours)
        _stop(real)


@contextlib.contextmanager
def real_and_our_clients(release: Release, base: pathlib.Path) -> Iterator[dict[str, Client]]:
    """gRPC clients of a fresh `release` containerd ("real") and of our server ("ours"),
    both on empty files under `base`, which is removed afterwards."""
    with real_and_ours(release, base) as (real, ours):
        clients = {"real": Client(real.address), "ours": Client(ours.address)}
        try:
            yield clients
        finally:
            for client in clients.values():
                client.close()
    shutil.rmtree(base, ignore_errors=True)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Attach the log tail of every running daemon to a failing test's report."""
    outcome = yield
    report = outcome.get_result()
    if report.failed and _daemons_in_use:
        for daemon in _daemons_in_use:
            report.sections.append((f"{daemon.name} log", daemon.log_tail()))


@pytest.fixture(scope="session", params=RELEASES, ids=[f"containerd-{r.minor}" for r in RELEASES])
def release(request) -> Release:
    """The containerd release this test runs against (its daemon, config, shim and ctr)."""
    require_root()
    return request.param.require()


@pytest.fixture(scope="session")
def ctr_bin(release: Release) -> str:
    return release.ctr


@pytest.fixture(scope="session")
def real_containerd(release: Release, tmp_path_factory) -> Iterator[Daemon]:
    """One private containerd per release for the session (tests use their own namespaces)."""
    daemon = _start(containerd_daemon(release.containerd, tmp_path_factory.mktemp(f"containerd-{release.minor}"),
                                      release=release))
    yield daemon
    _stop(daemon)


# Self-test of the suite: with BOLTIMAGES_COMPAT_SELFTEST=1 the "ours" side is a second
# private containerd, so every differential test must pass; a failure then is a bug in
# the suite (a step that is not deterministic, a normalisation that hides too little).
SELFTEST = os.environ.get("BOLTIMAGES_COMPAT_SELFTEST") == "1"



def _our_daemon(base: pathlib.Path, db: pathlib.Path, content_root: Optional[pathlib.Path] = None) -> Daemon:
    if SELFTEST:
        root = base / "selftest-root"
        if db.exists():
            copy_file(db, containerd_meta_db(root))
        if content_root is not None:
            shutil.copytree(content_root, root / "io.containerd.content.v1.content")
            # and the snapshotters' own stores, so snapshot kinds read as on the original
            for store in content_root.parent.glob("io.containerd.snapshotter.v1.*"):
                shutil.copytree(store, root / store.name, symlinks=True)
        daemon = containerd_daemon(require_tool("containerd"), base, root, DEFAULT)
        daemon.db_path = containerd_meta_db(root)
        return daemon
    extra = ["--content-root", str(content_root)] if content_root is not None else []
    daemon = boltimages_daemon(base, db, extra)
    daemon.db_path = db
    return daemon


@pytest.fixture(scope="session")
def our_server(tmp_path_factory) -> Iterator[Daemon]:
    """One `boltimages serve` for the session on a fresh database."""
    base = tmp_path_factory.mktemp("boltimages")
    daemon = _start(_our_daemon(base, base / "meta.db"))
    yield daemon
    _stop(daemon)


@pytest.fixture
def containerd_factory(release: Release, tmp_path: pathlib.Path) -> Iterator[Callable[..., Daemon]]:
    """Start extra private containerds of the test's release (e.g. on a prepared root); all
    stopped at teardown."""
    started: list[Daemon] = []
    counter = itertools.count()

    def make(root: Optional[pathlib.Path] = None) -> Daemon:
        daemon = _start(containerd_daemon(release.containerd, tmp_path / f"containerd{next(counter)}", root,
                                          release))
        started.append(daemon)
        return daemon

    yield make
    for daemon in started:
        _stop(daemon)


@pytest.fixture
def boltimages_factory(tmp_path: pathlib.Path) -> Iterator[Callable[..., Daemon]]:
    """Start extra servers of ours on a given database file; all stopped at teardown."""
    started: list[Daemon] = []
    counter = itertools.count()

    def make(db: pathlib.Path, content_root: Optional[pathlib.Path] = None) -> Daemon:
        daemon = _start(_our_daemon(tmp_path / f"boltimages{next(counter)}", db, content_root))
        started.append(daemon)
        return daemon

    yield make
    for daemon in started:
        _stop(daemon)


@pytest.fixture(scope="session")
def real_client(real_containerd: Daemon) -> Iterator[Client]:
    client = Client(real_containerd.address)
    yield client
    client.close()


@pytest.fixture(scope="session")
def our_client(our_server: Daemon) -> Iterator[Client]:
    client = Client(our_server.address)
    yield client
    client.close()


@pytest.fixture
def real_ctr(ctr_bin: str, real_containerd: Daemon) -> Ctr:
    return Ctr(ctr_bin, real_containerd.address)


@pytest.fixture
def our_ctr(ctr_bin: str, our_server: Daemon) -> Ctr:
    return Ctr(ctr_bin, our_server.address)


def copy_file(src: pathlib.Path, dst: pathlib.Path) -> pathlib.Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    return dst
