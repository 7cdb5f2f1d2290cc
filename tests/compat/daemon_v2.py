"""Private containerd 1.7.24 and 2.1.9 daemons for the tests of what 1.7/2.x do differently.

Kept apart from daemons.py so the release matrix there can take it over. A
2.x daemon differs from a 1.6 one by its config version (3) and the set of
disabled plugins that gives 2.1.9 a clean start (the CRI plugins and the
sandbox controllers; with fewer, the CRI runtime still starts); 1.7 takes
1.6's version-2 config. The release's own bin dir goes first on PATH so it
finds its own shim.
"""

from __future__ import annotations

import os
import pathlib
from typing import Optional

from tests.compat import fetch_containerd
from tests.compat.daemons import CONTAINERD_DISABLED_PLUGINS, Daemon, containerd_meta_db
from tests.helpers import missing, require_root, require_tool

VERSION = "2.1.9"
#: the releases after 1.6 the tests here can run against
NEWER_RELEASES = ("1.7.24", "2.1.9")
#: Debian 12's own containerd, installed on the machine (not fetched)
SYSTEM_RELEASE = "1.6.20"
ALL_RELEASES = (SYSTEM_RELEASE, *NEWER_RELEASES)

DISABLED_PLUGINS_V3 = (
    "io.containerd.grpc.v1.cri",
    "io.containerd.cri.v1.images",
    "io.containerd.cri.v1.runtime",
    "io.containerd.podsandbox.controller.v1.podsandbox",
    "io.containerd.grpc.v1.sandbox-controllers",
)


def require_release_bin(version: str) -> pathlib.Path:
    """A release's bin dir (skip locally, fail in CI when it is missing)."""
    require_root()
    if version == SYSTEM_RELEASE:
        return pathlib.Path(require_tool("containerd")).parent
    if not fetch_containerd.is_fetched(version):
        missing(f"containerd {version} is not fetched (python -m tests.compat.fetch_containerd)")
    return fetch_containerd.bin_dir(version)


def require_v2_bin() -> pathlib.Path:
    return require_release_bin(VERSION)


def _config(base: pathlib.Path, root: pathlib.Path, version: str) -> pathlib.Path:
    if version.startswith("1."):
        disabled = ", ".join(f'"{p}"' for p in CONTAINERD_DISABLED_PLUGINS)
        config_version = 2
    else:
        disabled = ", ".join(f'"{p}"' for p in DISABLED_PLUGINS_V3)
        config_version = 3
    text = (
        f"version = {config_version}\n"
        f'root = "{root}"\n'
        f'state = "{base / "state"}"\n'
        f"disabled_plugins = [{disabled}]\n"
        "[grpc]\n"
        f'  address = "{base / "containerd.sock"}"\n'
        "[ttrpc]\n"
        f'  address = "{base / "containerd.sock"}.ttrpc"\n'
        "[debug]\n"
        '  address = ""\n'
        '  level = "debug"\n'
        "[metrics]\n"
        '  address = ""\n'
    )
    path = base / "config.toml"
    path.write_text(text)
    return path


def containerd_v2_daemon(bin_dir: pathlib.Path, base: pathlib.Path,
                         root: Optional[pathlib.Path] = None, version: str = VERSION) -> Daemon:
    """An (unstarted) private containerd ``version`` (2.1.9 unless said) under ``base``;
    its socket is base/containerd.sock."""
    base.mkdir(parents=True, exist_ok=True)
    root = root or base / "root"
    env = dict(os.environ)
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    daemon = Daemon(f"containerd {version}",
                    [str(bin_dir / "containerd"), "--config", str(_config(base, root, version))],
                    str(base / "containerd.sock"), base / "containerd.log", env=env)
    daemon.db_path = containerd_meta_db(root)
    return daemon
