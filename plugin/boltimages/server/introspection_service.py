"""containerd.services.introspection.v1.Introspection.

``Plugins`` describes what this server provides in containerd's vocabulary
(plugin type and id), so ``ctr plugins ls`` and feature probes work and show
that only the metadata side of containerd is here. ``Server`` returns a UUID
that identifies the store (kept in a file beside the metadata file, the way
containerd keeps one under its root), our pid and pid namespace, and no
deprecation warnings.
"""

from __future__ import annotations

import logging
import os
import uuid as uuidlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import grpc
from google.protobuf import empty_pb2

from ..api.containerd.services.introspection.v1 import introspection_pb2, introspection_pb2_grpc
from ..errors import NotFound, go_quote
from ..store import filters
from .status import grpc_errors

log = logging.getLogger("boltimages.server")

# containerd's plugin type names
EVENT = "io.containerd.event.v1"
METADATA = "io.containerd.metadata.v1"
LEASE = "io.containerd.lease.v1"
SERVICE = "io.containerd.service.v1"
GRPC = "io.containerd.grpc.v1"
INTERNAL = "io.containerd.internal.v1"


@dataclass(frozen=True)
class PluginInfo:
    type: str
    id: str
    requires: tuple[str, ...] = ()
    exports: dict[str, str] = field(default_factory=dict, hash=False)
    capabilities: tuple[str, ...] = ()


def default_plugins(exports: Optional[dict[str, str]] = None) -> list[PluginInfo]:
    """What ``boltimages serve`` registers, in containerd's order of dependencies."""
    return [
        PluginInfo(EVENT, "exchange"),
        PluginInfo(METADATA, "bolt", (EVENT,), dict(exports or {})),
        PluginInfo(LEASE, "manager", (METADATA,)),
        PluginInfo(SERVICE, "images-service", (METADATA,)),
        PluginInfo(SERVICE, "namespaces-service", (METADATA,)),
        PluginInfo(SERVICE, "leases-service", (LEASE,)),
        PluginInfo(SERVICE, "introspection-service"),
        PluginInfo(SERVICE, "content-service", (METADATA,)),
        PluginInfo(SERVICE, "snapshots-service", (METADATA,)),
        PluginInfo(SERVICE, "containers-service", (METADATA,)),
        PluginInfo(GRPC, "content", (SERVICE,)),
        PluginInfo(GRPC, "transfer", (METADATA,)),
        PluginInfo(GRPC, "streaming"),
        PluginInfo(GRPC, "snapshots", (SERVICE,)),
        PluginInfo(GRPC, "containers", (SERVICE,)),
        PluginInfo(GRPC, "images", (SERVICE,)),
        PluginInfo(GRPC, "namespaces", (SERVICE,)),
        PluginInfo(GRPC, "leases", (SERVICE,)),
        PluginInfo(GRPC, "events", (EVENT,)),
        PluginInfo(GRPC, "version"),
        PluginInfo(GRPC, "introspection", (SERVICE,)),
        PluginInfo(GRPC, "healthcheck"),
    ]


def _to_proto(p: PluginInfo) -> introspection_pb2.Plugin:
    return introspection_pb2.Plugin(type=p.type, id=p.id, requires=list(p.requires),
                                    exports=p.exports, capabilities=list(p.capabilities))


def _adaptor(p: PluginInfo):
    # containerd filters plugins on type and id only (platforms/capabilities are unhandled)
    def adaptor(path: Sequence[str]) -> tuple[str, bool]:
        if path and path[0] == "type":
            return p.type, bool(p.type)
        if path and path[0] == "id":
            return p.id, bool(p.id)
        return "", False
    return adaptor


def store_uuid(db_path: Optional[str]) -> str:
    """The UUID of the store at ``db_path``, created on first use in ``<db_path>.uuid``.

    If the file cannot be written (read-only directory) the server still
    answers, with a UUID that lasts for this process, and says so in the log.
    """
    if db_path:
        path = Path(str(db_path) + ".uuid")
        try:
            text = path.read_text().strip()
            return str(uuidlib.UUID(text))
        except FileNotFoundError:
            pass
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable uuid file %s: %s", path, exc)
        value = str(uuidlib.uuid4())
        try:
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(value + "\n")
            os.replace(tmp, path)
            return value
        except OSError as exc:
            log.warning("cannot persist server uuid at %s: %s", path, exc)
            return value
    return str(uuidlib.uuid4())


def pid_namespace() -> int:
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return 0


class IntrospectionServicer(introspection_pb2_grpc.IntrospectionServicer):
    def __init__(self, plugins: list[PluginInfo], server_uuid: str) -> None:
        self.plugins = plugins
        self.uuid = server_uuid

    @grpc_errors
    def Plugins(self, request: introspection_pb2.PluginsRequest,
                context: grpc.ServicerContext) -> introspection_pb2.PluginsResponse:
        selected = filters.parse_all(list(request.filters))
        return introspection_pb2.PluginsResponse(
            plugins=[_to_proto(p) for p in self.plugins if selected.match(_adaptor(p))])

    @grpc_errors
    def Server(self, request: empty_pb2.Empty, context: grpc.ServicerContext) -> introspection_pb2.ServerResponse:
        return introspection_pb2.ServerResponse(uuid=self.uuid, pid=os.getpid(), pidns=pid_namespace())

    @grpc_errors
    def PluginInfo(self, request: introspection_pb2.PluginInfoRequest,
                   context: grpc.ServicerContext) -> introspection_pb2.PluginInfoResponse:
        for p in self.plugins:
            if p.type == request.type and p.id == request.id:
                return introspection_pb2.PluginInfoResponse(plugin=_to_proto(p))
        raise NotFound(f"plugin {go_quote(request.type + '.' + request.id)}")
