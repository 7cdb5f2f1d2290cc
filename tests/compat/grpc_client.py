"""One gRPC client, used unchanged against real containerd and against ours.

Everything a differential test compares goes through `Client.call`, which
returns an `Outcome` (the response or the status code and message) instead of
raising, so a scenario can record both servers' answers side by side.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Optional

import grpc

NAMESPACE_KEY = "containerd-namespace"


class ApiMissing(RuntimeError):
    """The generated protobuf modules are not importable."""


def api(module: str) -> Any:
    """Import boltimages.api.containerd.<module> (e.g. 'services.images.v1.images_pb2')."""
    name = "boltimages.api.containerd." + module
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise ApiMissing(f"cannot import {name} ({exc}); generate the protos first: "
                         "python -c \"import setup,pathlib; setup.generate_protos(pathlib.Path('plugin'))\"") from exc


@dataclasses.dataclass
class Outcome:
    code: grpc.StatusCode
    details: str
    response: Any = None

    @property
    def ok(self) -> bool:
        return self.code == grpc.StatusCode.OK

    def __str__(self) -> str:
        if self.ok:
            return f"OK {type(self.response).__name__}"
        return f"{self.code.name}: {self.details}"


class Client:
    """Stubs for the services we compare, over one unix-socket channel."""

    def __init__(self, address: str, options: Optional[list] = None) -> None:
        self.address = address
        self.channel = grpc.insecure_channel("unix://" + address, options=options or [])
        grpc.channel_ready_future(self.channel).result(timeout=10)
        self.images_pb2 = api("services.images.v1.images_pb2")
        self.namespaces_pb2 = api("services.namespaces.v1.namespace_pb2")
        self.leases_pb2 = api("services.leases.v1.leases_pb2")
        self.descriptor_pb2 = api("types.descriptor_pb2")
        self.images = api("services.images.v1.images_pb2_grpc").ImagesStub(self.channel)
        self.namespaces = api("services.namespaces.v1.namespace_pb2_grpc").NamespacesStub(self.channel)
        self.leases = api("services.leases.v1.leases_pb2_grpc").LeasesStub(self.channel)

    def close(self) -> None:
        self.channel.close()

    def call(self, method: Any, request: Any, namespace: Optional[str] = "default",
             timeout: float = 10.0) -> Outcome:
        """Invoke a stub method; `namespace=None` sends no namespace header at all."""
        metadata = [] if namespace is None else [(NAMESPACE_KEY, namespace)]
        try:
            response = method(request, metadata=metadata, timeout=timeout)
        except grpc.RpcError as err:
            return Outcome(err.code(), err.details() or "")
        return Outcome(grpc.StatusCode.OK, "", response)
