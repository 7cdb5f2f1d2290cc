"""The containerd releases the compat suite runs against, in one place.

Each release says where its own `containerd`, `ctr` and `containerd-shim-runc-v2`
live (Debian 12's 1.6.20 in /usr/bin; 1.7.24 and 2.1.9 unpacked by
`fetch_containerd.py`), which config it boots with, the metadata db version it
writes, and the PATH that makes it find its own shim first.

A release that is not on this machine skips locally and fails in CI
(tests.helpers.missing), like a missing 1.6.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import subprocess
from typing import Optional

from tests.compat import fetch_containerd
from tests.helpers import missing

# Plugins a private containerd does not need for image metadata work and which are
# slow or want kernel features (CRI, other snapshotters, the /opt installer, the
# cgroup monitor). Unknown names are ignored by containerd, so the list is shared.
# The v1 runtime stays: without it 1.6 and 1.7 log that their task service failed to load.
_COMMON_DISABLED = (
    "io.containerd.grpc.v1.cri",
    "io.containerd.snapshotter.v1.aufs",
    "io.containerd.snapshotter.v1.btrfs",
    "io.containerd.snapshotter.v1.devmapper",
    "io.containerd.snapshotter.v1.zfs",
    "io.containerd.internal.v1.opt",
    "io.containerd.monitor.v1.cgroups",
)
# 2.x moved CRI into several plugins: with fewer of these disabled the CRI runtime
# still starts or a plugin warns (measured: this is the set that logs no warning).
_DISABLED_2X = _COMMON_DISABLED + (
    "io.containerd.cri.v1.images",
    "io.containerd.cri.v1.runtime",
    "io.containerd.podsandbox.controller.v1.podsandbox",
    "io.containerd.grpc.v1.sandbox-controllers",
)


@dataclasses.dataclass(frozen=True)
class Release:
    version: str                     # "1.6.20"
    config_version: int              # the `version = N` of its config.toml
    disabled_plugins: tuple[str, ...]
    db_version: int                  # what it writes under v1/version
    writes_freelist: bool            # False: bbolt NoFreelistSync (no freelist page on disk)
    system: bool = False             # Debian 12's own package in /usr/bin

    @property
    def major(self) -> int:
        return int(self.version.split(".")[0])

    @property
    def minor(self) -> str:
        """"1.6", "1.7", "2.1": the name used in expectations and test ids."""
        return ".".join(self.version.split(".")[:2])

    @property
    def bin_dir(self) -> pathlib.Path:
        return pathlib.Path("/usr/bin") if self.system else fetch_containerd.bin_dir(self.version)

    @property
    def containerd(self) -> str:
        return str(self.bin_dir / "containerd")

    @property
    def ctr(self) -> str:
        return str(self.bin_dir / "ctr")

    def env(self, base: Optional[dict] = None) -> dict[str, str]:
        """Environment with the release's own bin dir first on PATH (so it starts its own shim)."""
        env = dict(os.environ if base is None else base)
        env["PATH"] = os.pathsep.join(p for p in (str(self.bin_dir), env.get("PATH", "")) if p)
        return env

    def problem(self) -> Optional[str]:
        """Why this release cannot run here, or None."""
        for name in ("containerd", "ctr", "containerd-shim-runc-v2"):
            if not (self.bin_dir / name).is_file():
                how = ("install Debian's containerd package" if self.system
                       else "run `python -m tests.compat.fetch_containerd`")
                return f"containerd {self.version}: {self.bin_dir / name} is missing ({how})"
        found = _reported_version(self.containerd)
        if found != self.version:
            return f"{self.containerd} is containerd {found or '(unknown)'}, not {self.version}"
        return None

    def require(self) -> "Release":
        """This release, or skip (locally) / fail (CI) naming what is missing."""
        reason = self.problem()
        if reason:
            missing(reason)
        return self


_versions_seen: dict[str, Optional[str]] = {}


def _reported_version(containerd: str) -> Optional[str]:
    """The x.y.z from `containerd --version` (e.g. '... 1.6.20~ds1 1.6.20~ds1-1+deb12u3')."""
    if containerd not in _versions_seen:
        try:
            out = subprocess.run([containerd, "--version"], capture_output=True, text=True, timeout=10).stdout
        except OSError:
            out = ""
        words = out.split()
        version = None
        if len(words) >= 3:
            version = words[2].lstrip("v").split("~")[0].split("+")[0]
        _versions_seen[containerd] = version
    return _versions_seen[containerd]


RELEASES: tuple[Release, ...] = (
    Release("1.6.20", 2, _COMMON_DISABLED, 3, True, system=True),
    Release("1.7.24", 2, _COMMON_DISABLED, 3, False),
    Release("2.1.9", 3, _DISABLED_2X, 4, False),
)
BY_VERSION = {r.version: r for r in RELEASES}
# The release the single-daemon helpers default to (other suites: store, tools, server).
DEFAULT = RELEASES[0]
assert set(fetch_containerd.FETCHED_RELEASES) == {r.version for r in RELEASES if not r.system}
