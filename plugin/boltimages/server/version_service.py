"""containerd.services.version.v1.Version.

We answer with boltimages' own version and revision, not a containerd
version: ``ctr version`` then prints

    Server:
      Version:  boltimages/<package version>
      Revision: <git revision, or "unknown">
      UUID: <Introspection/Server uuid>

The "boltimages/" prefix makes it obvious which server answered; clients that
parse the version (nerdctl, for feature checks) only look for a leading
semver, and ours is none, so they fall back to their defaults rather than
assuming containerd features we do not serve.
"""

from __future__ import annotations

import os
import subprocess
from functools import lru_cache
from pathlib import Path

import grpc
from google.protobuf import empty_pb2

from ..api.containerd.services.version.v1 import version_pb2, version_pb2_grpc
from .status import grpc_errors

PRODUCT = "boltimages"


@lru_cache(maxsize=1)
def package_version() -> str:
    try:
        from importlib.metadata import PackageNotFoundError, version
        try:
            return version(PRODUCT)
        except PackageNotFoundError:
            pass
    except ImportError:  # pragma: no cover - Python < 3.8
        pass
    return "0.1.0+dev"


@lru_cache(maxsize=1)
def revision() -> str:
    """Env BOLTIMAGES_REVISION (set by packagers), else the source checkout's git HEAD, else "unknown"."""
    env = os.environ.get("BOLTIMAGES_REVISION")
    if env:
        return env
    source = Path(__file__).resolve().parents[3]
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


class VersionServicer(version_pb2_grpc.VersionServicer):
    @grpc_errors
    def Version(self, request: empty_pb2.Empty, context: grpc.ServicerContext) -> version_pb2.VersionResponse:
        return version_pb2.VersionResponse(version=version_string(), revision=revision())
