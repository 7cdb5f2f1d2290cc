"""Small service-level behaviours clients rely on, checked on both servers.

* gRPC health: `grpc.health.v1.Health/Check` answers SERVING (kubelet-style probes
  and `ctr` users' scripts call it).
* Introspection/Server UUID: containerd keeps it across restarts (it identifies
  the daemon to clients such as BuildKit); ours must too, for the same data.
"""

from __future__ import annotations

import pathlib

import grpc
import pytest

from tests.compat.ctr_runner import Ctr
from tests.compat.daemons import boltimages_daemon

pytestmark = pytest.mark.compat

SERVING = b"\x08\x01"   # HealthCheckResponse{status: SERVING}


def _health(address: str, service: bytes = b"") -> tuple:
    with grpc.insecure_channel("unix://" + address) as channel:
        check = channel.unary_unary("/grpc.health.v1.Health/Check", request_serializer=None,
                                    response_deserializer=None)
        request = (b"\x0a" + bytes([len(service)]) + service) if service else b""
        try:
            return "OK", check(request, timeout=5)
        except grpc.RpcError as err:
            return err.code().name, b""


def test_health_serving(real_containerd, our_server) -> None:
    assert _health(real_containerd.address) == ("OK", SERVING)
    assert _health(our_server.address) == ("OK", SERVING)


def test_health_unknown_service(real_containerd, our_server) -> None:
    theirs = _health(real_containerd.address, b"no.such.Service")
    ours = _health(our_server.address, b"no.such.Service")
    assert ours[0] == theirs[0]


def _uuid(ctr: str, address: str) -> str:
    out = Ctr(ctr, address)("version").ok().stdout
    lines = [line.split("UUID:")[1].strip() for line in out.splitlines() if "UUID:" in line]
    assert len(lines) == 1 and lines[0], out
    return lines[0]


def test_uuid_survives_restart(containerd_factory, ctr_bin: str,
                               tmp_path: pathlib.Path) -> None:
    root = tmp_path / "croot"
    first = containerd_factory(root)
    real_ids = [_uuid(ctr_bin, first.address)]
    first.stop()
    real_ids.append(_uuid(ctr_bin, containerd_factory(root).address))
    assert real_ids[0] == real_ids[1]

    # Our real server even in self-test mode: the question is where *it* keeps the UUID.
    db = tmp_path / "ours" / "meta.db"
    db.parent.mkdir()
    our_ids = []
    for attempt in range(2):
        ours = boltimages_daemon(tmp_path / f"ours{attempt}", db).start()
        try:
            our_ids.append(_uuid(ctr_bin, ours.address))
        finally:
            ours.stop()
    assert our_ids[0] == our_ids[1], f"UUID changed across a restart on the same data: {our_ids}"
