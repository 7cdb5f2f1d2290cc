"""A logging gRPC proxy between a client (ctr) and a server, for any method.

It knows no protobufs: every method is handled as a bidirectional stream of
raw bytes (on the wire unary and streaming calls are framed the same way), so
it forwards whatever `ctr` calls and records, in order, the method name, the
namespace header and the final status. That record is how we learn which RPCs
each ctr command needs from our server.
"""

from __future__ import annotations

import dataclasses
import threading
from concurrent import futures
from typing import Iterator

import grpc

NAMESPACE_KEY = "containerd-namespace"


@dataclasses.dataclass
class ProxiedCall:
    method: str
    namespace: str
    code: str = "?"
    details: str = ""


class _Forwarder(grpc.GenericRpcHandler):
    def __init__(self, proxy: "LoggingProxy") -> None:
        self.proxy = proxy

    def service(self, handler_call_details):
        method = handler_call_details.method
        proxy = self.proxy

        def forward(request_iterator: Iterator[bytes], context: grpc.ServicerContext):
            metadata = [(k, v) for k, v in context.invocation_metadata()
                        if not k.startswith(":") and k not in ("user-agent",) and not k.startswith("grpc-")]
            namespace = dict(metadata).get(NAMESPACE_KEY, "")
            record = proxy._record(method, namespace)
            if any(short_method(method).startswith(prefix) for prefix in proxy.refuse):
                record.code = "UNIMPLEMENTED"
                context.abort(grpc.StatusCode.UNIMPLEMENTED, f"unknown service (refused by proxy): {method}")
            upstream = proxy.channel.stream_stream(method, request_serializer=None, response_deserializer=None)
            call = upstream(request_iterator, metadata=metadata)
            try:
                for message in call:
                    yield message
                record.code = "OK"
            except grpc.RpcError as err:
                record.code = err.code().name
                record.details = err.details() or ""
                context.abort(err.code(), err.details() or "")
            finally:
                if context.is_active() is False:
                    call.cancel()

        return grpc.stream_stream_rpc_method_handler(forward, request_deserializer=None,
                                                     response_serializer=None)


class LoggingProxy:
    """Listen on `listen` (a unix socket path), forward to `upstream`, log every call."""

    def __init__(self, listen: str, upstream: str, refuse: tuple = ()) -> None:
        """`refuse`: short method prefixes (e.g. "Content/") answered UNIMPLEMENTED instead of
        forwarded, to see how ctr behaves against a server without those services."""
        self.refuse = tuple(refuse)
        self.listen = listen
        self.upstream = upstream
        self.calls: list[ProxiedCall] = []
        self._lock = threading.Lock()
        self.channel = grpc.insecure_channel("unix://" + upstream)
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
        self.server.add_generic_rpc_handlers((_Forwarder(self),))
        self.server.add_insecure_port("unix://" + listen)

    def _record(self, method: str, namespace: str) -> ProxiedCall:
        record = ProxiedCall(method, namespace)
        with self._lock:
            self.calls.append(record)
        return record

    def take(self) -> list[ProxiedCall]:
        """Calls seen since the last take(), in arrival order."""
        with self._lock:
            calls, self.calls = self.calls, []
        return calls

    def __enter__(self) -> "LoggingProxy":
        self.server.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.stop(grace=1).wait()
        self.channel.close()


def short_method(method: str) -> str:
    """'/containerd.services.images.v1.Images/List' -> 'Images/List'."""
    service, _, name = method.lstrip("/").rpartition("/")
    return service.rsplit(".", 1)[-1] + "/" + name
