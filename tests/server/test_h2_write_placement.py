"""Where the h2 transport runs writes: a lone writer on the loop thread,
writers that arrive together in the pool, so they still share commits.

Counted through the file itself: every commit raises the meta page's txid, so
concurrent creates that share commits raise it by less than one per create.
"""

from __future__ import annotations

import struct
import threading

import grpc

from tests.server.conftest import md

# meta page layout (see native/page.h): page header 16 bytes, then magic,
# version, page size, flags (4 each), root bucket (16), freelist and pgid (8
# each), then txid
META_TXID_OFFSET = 16 + 4 * 4 + 16 + 8 + 8


def _txid(db_path: str) -> int:
    with open(db_path, "rb") as f:
        first = f.read(4096 + META_TXID_OFFSET + 8)
    page_size = struct.unpack_from("<I", first, 16 + 8)[0]
    with open(db_path, "rb") as f:
        pages = f.read(2 * page_size)
    return max(struct.unpack_from("<Q", pages, i * page_size + META_TXID_OFFSET)[0] for i in (0, 1))


def _creates(channel: grpc.Channel, prefix: str, count: int, errors: list[BaseException]) -> None:
    from boltimages.api.containerd.services.images.v1 import images_pb2, images_pb2_grpc
    from boltimages.api.containerd.types import descriptor_pb2

    stub = images_pb2_grpc.ImagesStub(channel)
    try:
        for i in range(count):
            image = images_pb2.Image(name=f"{prefix}/{i}:latest", target=descriptor_pb2.Descriptor(
                media_type="application/vnd.oci.image.index.v1+json", digest="sha256:" + "ab" * 32, size=1))
            stub.Create(images_pb2.CreateImageRequest(image=image), metadata=md("placement"), timeout=30)
    except BaseException as exc:  # noqa: BLE001 - reported by the test thread
        errors.append(exc)


def _run(channels: list[grpc.Channel], per_client: int) -> int:
    errors: list[BaseException] = []
    threads = [threading.Thread(target=_creates, args=(ch, f"c{i}", per_client, errors))
               for i, ch in enumerate(channels)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]
    return len(threads) * per_client


def test_writers_on_separate_connections_share_commits(serve) -> None:
    served = serve()
    # a private subchannel pool gives every channel its own connection
    channels = [grpc.insecure_channel(served.target, options=[("grpc.use_local_subchannel_pool", 1)])
                for _ in range(12)]
    try:
        before = _txid(served.db)
        creates = _run(channels, 25)
        commits = _txid(served.db) - before
    finally:
        for ch in channels:
            ch.close()
    assert commits < creates * 0.8, f"{creates} creates took {commits} commits: concurrent writers did not share"


def test_writers_on_one_connection_share_commits(serve) -> None:
    served = serve()
    with served.channel() as channel:
        before = _txid(served.db)
        creates = _run([channel] * 12, 25)
        commits = _txid(served.db) - before
    assert commits < creates * 0.8, f"{creates} creates took {commits} commits: concurrent writers did not share"


def test_lone_writer_gets_every_create(serve) -> None:
    served = serve()
    with served.channel() as channel:
        before = _txid(served.db)
        creates = _run([channel], 40)
        assert _txid(served.db) - before == creates  # nothing to share with: one commit each
