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

import grpc
from google.protobuf import empty_pb2

from ..api.containerd.services.version.v1 import version_pb2, version_pb2_grpc
from ..version import revision, version_string
from .status import grpc_errors


class VersionServicer(version_pb2_grpc.VersionServicer):
    @grpc_errors
    def Version(self, request: empty_pb2.Empty, context: grpc.ServicerContext) -> version_pb2.VersionResponse:
        return version_pb2.VersionResponse(version=version_string(), revision=revision())
