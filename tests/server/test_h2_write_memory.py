"""After writers overlap, a client writing one call at a time goes back to
the loop thread once the overlap is over.

Why it matters: a write that joins a write group pays two thread hand-offs
(the commit runs on the committer thread), about a tenth of an Update. Each
grouped call used to renew the "calls overlapped lately" memory, so a lone
client that started right after a burst stayed in groups for as long as it
kept writing. Driven in-process over a real socket and a real store file,
with a handler that records whether it ran in a group.
"""

from __future__ import annotations

import os
import threading
import time
from concurrent import futures
from typing import Any

import grpc

from boltimages.server.h2.server import CONCURRENCY_MEMORY_SECONDS, NativeServer
from boltimages.store.db import MetadataDB

SERVICE = "test.Memory"
METHOD = f"/{SERVICE}/Put"


class _Store:
    def __init__(self, path: str) -> None:
        self.db = MetadataDB(path)
        self.placements: list[str] = []
        self.lock = threading.Lock()

    def put(self, request: bytes, context: Any) -> bytes:
        def write(tx: Any) -> None:
            tx.create_bucket_if_not_exists(b"memory").put(request, b"1")
        self.db.batch(write)
        # a grouped call runs on the loop thread too, inside the group's transaction
        where = "group" if self.db.active_group() is not None else threading.current_thread().name
        with self.lock:
            self.placements.append(where)
        return request


def test_a_lone_writer_leaves_groups_once_a_burst_is_over(tmp_path) -> None:
    store = _Store(os.path.join(tmp_path, "meta.db"))
    executor = futures.ThreadPoolExecutor(8, thread_name_prefix="pool")
    server = NativeServer(executor, max_receive_message_length=1 << 20, max_send_message_length=1 << 20)
    server.enable_write_groups(store.db.open_group, [METHOD])
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        SERVICE, {"Put": grpc.unary_unary_rpc_method_handler(store.put)}),))
    sock = os.path.join(tmp_path, "m.sock")
    server.add_insecure_port("unix:" + sock)
    server.start()
    channels = [grpc.insecure_channel("unix://" + sock, options=[("grpc.use_local_subchannel_pool", 1)])
                for _ in range(8)]
    try:
        calls = [ch.unary_unary(METHOD) for ch in channels]

        def burst(i: int) -> None:
            for n in range(20):
                calls[i](f"burst-{i}-{n}".encode(), timeout=30)

        threads = [threading.Thread(target=burst, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert "group" in store.placements, "overlapping writers never shared a group"
        # one client, one call at a time, for well past the memory
        with store.lock:
            store.placements.clear()
        deadline = time.monotonic() + 3 * CONCURRENCY_MEMORY_SECONDS + 0.5
        n = 0
        while time.monotonic() < deadline:
            calls[0](f"lone-{n}".encode(), timeout=30)
            n += 1
        with store.lock:
            tail = store.placements[n // 2:]
        assert tail and set(tail) == {"h2-loop"}, \
            f"lone calls not back on the loop thread long after the burst: {tail[-5:]}"
        with store.db.engine.begin() as tx:
            stored = sum(1 for _ in tx.bucket(b"memory").keys())
        assert stored == 8 * 20 + n
    finally:
        for ch in channels:
            ch.close()
        assert server.stop(1.0).wait(10)
        executor.shutdown(wait=True)
        store.db.close()
