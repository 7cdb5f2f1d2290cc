"""gRPC message size limits: containerd allows 16 MiB each way; ours must behave the same.

A List whose answer exceeds 16 MiB fails on the server side with
RESOURCE_EXHAUSTED; below it succeeds. A request over 16 MiB is refused the
same way. Only status codes are compared: the texts come from two different
gRPC implementations (Go vs C core).
"""

from __future__ import annotations

import uuid

import pytest

from tests.compat import scenario
from tests.compat.grpc_client import Client

pytestmark = pytest.mark.compat

MIB = 1 << 20
OPTIONS = [("grpc.max_receive_message_length", 64 * MIB), ("grpc.max_send_message_length", 64 * MIB)]


def _big_labels(seed: int, total: int) -> dict:
    """Labels adding up to about `total` bytes, each key+value within containerd's 4096."""
    value = "v" * 4000
    return {f"k{seed}-{i:05d}": value for i in range(total // 4010)}


def _limits(address: str) -> dict:
    client = Client(address, OPTIONS)   # the client must not be the limit
    run = scenario.Run(client, "limits-" + uuid.uuid4().hex[:6])
    out = {}
    for i in range(3):   # 3 × ~5 MiB images: a ~15 MiB List
        out[f"create {i}"] = run.create(name=f"big/{i}:1", labels=_big_labels(i, 5 * MIB)).code.name
    listed = run.list()
    out["list ~15 MiB"] = (listed.code.name, len(listed.response.images) if listed.ok else None)
    out["create 4th"] = run.create(name="big/3:1", labels=_big_labels(3, 5 * MIB)).code.name
    listed = run.list()
    out["list ~20 MiB"] = listed.code.name
    out["filtered list"] = run.list("name==big/0:1").code.name
    out["create request > 16 MiB"] = run.create(name="big/huge:1", labels=_big_labels(9, 17 * MIB)).code.name
    out["get after refused create"] = run.get("big/huge:1").code.name
    client.close()
    return out


def test_message_limits(real_containerd, our_server) -> None:
    theirs = _limits(real_containerd.address)
    assert theirs["list ~15 MiB"] == ("OK", 3)
    assert theirs["list ~20 MiB"] == "RESOURCE_EXHAUSTED"
    assert theirs["create request > 16 MiB"] == "RESOURCE_EXHAUSTED"
    ours = _limits(our_server.address)
    assert ours == theirs
