"""The abuse suite's liveness client, in a process of its own so that the
attacking test process's CPU and GIL never count against the server.

    python -m tests.server.liveness unix:///path/to.sock IMAGE_NAME

Calls Version, Images/Get and Images/List in turn every 50 ms, each with a
1 s deadline, on one connection. Prints "ready" once all three answered,
runs until a line arrives on stdin, then prints one JSON object:
{"latencies": [...seconds], "failures": ["Method: CODE details", ...]}.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import Callable

import grpc

PERIOD = 0.05
DEADLINE = 1.0
NAMESPACE = "default"


def main(target: str, image: str) -> int:
    from google.protobuf import empty_pb2

    from boltimages.api.containerd.services.images.v1 import images_pb2, images_pb2_grpc
    from boltimages.api.containerd.services.version.v1 import version_pb2_grpc

    channel = grpc.insecure_channel(target)
    images = images_pb2_grpc.ImagesStub(channel)
    version = version_pb2_grpc.VersionStub(channel)
    md = [("containerd-namespace", NAMESPACE)]
    calls: list[tuple[str, Callable[[], object]]] = [
        ("Version", lambda: version.Version(empty_pb2.Empty(), timeout=DEADLINE)),
        ("Get", lambda: images.Get(images_pb2.GetImageRequest(name=image), metadata=md, timeout=DEADLINE)),
        ("List", lambda: images.List(images_pb2.ListImagesRequest(), metadata=md, timeout=DEADLINE)),
    ]
    for _, call in calls:  # connected and warm before the attack starts
        call()
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.readline(), stop.set()), daemon=True).start()
    print("ready", flush=True)
    latencies: list[float] = []
    failures: list[str] = []
    i = 0
    while not stop.is_set():
        name, call = calls[i % len(calls)]
        i += 1
        start = time.monotonic()
        try:
            call()
        except grpc.RpcError as exc:
            failures.append(f"{name}: {exc.code().name} {exc.details()}")
        latencies.append(time.monotonic() - start)
        stop.wait(max(0.0, PERIOD - (time.monotonic() - start)))  # pacing: one call per period
    channel.close()
    print(json.dumps({"latencies": latencies, "failures": failures}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
