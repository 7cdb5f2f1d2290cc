"""What build this is: the package version and the source revision.

Shared by ``boltimages --version`` and the Version service, and free of grpc
so the command line can answer without loading the server.
"""

from __future__ import annotations

import os
import subprocess
from functools import lru_cache
from pathlib import Path

PRODUCT = "boltimages"
#: the version when the package metadata is missing (a source checkout on PYTHONPATH)
DEV_VERSION = "0.1.0+dev"


@lru_cache(maxsize=1)
def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version(PRODUCT)
    except PackageNotFoundError:
        return DEV_VERSION


@lru_cache(maxsize=1)
def revision() -> str:
    """Env BOLTIMAGES_REVISION (set by packagers), else the source checkout's git HEAD, else "unknown"."""
    env = os.environ.get("BOLTIMAGES_REVISION")
    if env:
        return env
    source = Path(__file__).resolve().parents[2]
    if (source / ".git").exists():
        try:
            out = subprocess.run(["git", "-C", str(source), "rev-parse", "HEAD"], capture_output=True,
                                 text=True, timeout=5, check=False)
            if out.returncode == 0 and out.stdout.strip():
                return out.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    return "unknown"


def version_string() -> str:
    return f"{PRODUCT}/{package_version()}"
