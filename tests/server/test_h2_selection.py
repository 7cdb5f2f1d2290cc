"""Choosing the gRPC transport: native by default, grpcio by flag or config; both serve the same."""

from __future__ import annotations

import pathlib
import signal
import time

import grpc
import pytest
from google.protobuf import empty_pb2

from boltimages.api.containerd.services.version.v1 import version_pb2_grpc
from boltimages.server import config as config_mod
from tests.helpers import wait_until
from tests.server.conftest import run_serve


def test_default_is_native_and_file_or_flag_choose(tmp_path: pathlib.Path) -> None:
    assert config_mod.build(None, {}).transport == "native"
    path = tmp_path / "c.toml"
    path.write_text('version = 2\n[grpc]\n  transport = "grpcio"\n')
    assert config_mod.build(str(path), {}).transport == "grpcio"
    assert config_mod.build(str(path), {"transport": "native"}).transport == "native"


def test_unknown_transport_is_one_line(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('version = 2\n[grpc]\n  transport = "quic"\n')
    result = run_serve("--config", str(path), "--socket", str(tmp_path / "s.sock"), "--db", str(tmp_path / "m.db"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "boltimages serve: grpc.transport must be native or grpcio, got 'quic'"]


@pytest.mark.parametrize("transport", ["native", "grpcio"])
def test_each_transport_serves_and_logs_its_name(serve, transport: str) -> None:
    served = serve("--transport", transport)
    with served.channel() as channel:
        reply = version_pb2_grpc.VersionStub(channel).Version(empty_pb2.Empty(), timeout=10)
        assert reply.version.startswith("boltimages/")
        with pytest.raises(grpc.RpcError) as err:
            channel.unary_unary("/no.Such/Method")(b"", timeout=10)
        assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert wait_until(lambda: f"transport={transport}" in served.log(), 10, 0.05)


def test_debug_level_logs_each_call_with_native(serve) -> None:
    served = serve("--log-level", "debug", "--transport", "native")
    with served.channel() as channel:
        version_pb2_grpc.VersionStub(channel).Version(empty_pb2.Empty(), timeout=10)
    assert wait_until(lambda: "method=/containerd.services.version.v1.Version/Version" in served.log(), 10, 0.05)


def test_health_watch_streams_and_ends_on_shutdown(serve) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    served = serve("--grace-period", "2")
    with served.channel() as channel:
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(), timeout=60)
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
        started = time.monotonic()
        served.proc.send_signal(signal.SIGTERM)
        # SIGTERM: NOT_SERVING reaches the watcher, then the stream ends when the grace period runs out
        assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING
        with pytest.raises(grpc.RpcError):
            next(watch)
        assert time.monotonic() - started < 8
    assert served.stop() == 0


def test_cancelled_watch_frees_its_worker(serve) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    served = serve("--workers", "2")
    with served.channel() as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for _ in range(5):  # more watches than workers, one after another
            watch = stub.Watch(health_pb2.HealthCheckRequest(), timeout=30)
            assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
            watch.cancel()
        # a pooled call still gets a worker
        from boltimages.api.containerd.services.namespaces.v1 import namespace_pb2, namespace_pb2_grpc
        namespace_pb2_grpc.NamespacesStub(channel).Create(
            namespace_pb2.CreateNamespaceRequest(namespace=namespace_pb2.Namespace(name="after-watch")), timeout=10)
