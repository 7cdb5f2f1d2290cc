"""Choosing the gRPC transport: native by default, grpcio by flag or config; both serve the same."""

from __future__ import annotations

import pathlib

import grpc
import pytest
from google.protobuf import empty_pb2

from boltimages.api.containerd.services.version.v1 import version_pb2_grpc
from boltimages.server import config as config_mod
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
    assert f"transport={transport}" in served.log()


def test_debug_level_logs_each_call_with_native(serve) -> None:
    served = serve("--log-level", "debug", "--transport", "native")
    with served.channel() as channel:
        version_pb2_grpc.VersionStub(channel).Version(empty_pb2.Empty(), timeout=10)
    assert "method=/containerd.services.version.v1.Version/Version" in served.log()
