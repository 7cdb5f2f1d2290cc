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


def _create_status(stub, name: str, namespace: str, lease: str = "", labels=None) -> grpc.StatusCode:
    from boltimages.api.containerd.services.images.v1 import images_pb2
    from boltimages.api.containerd.types import descriptor_pb2

    image = images_pb2.Image(name=name, labels=labels or {}, target=descriptor_pb2.Descriptor(
        media_type="application/vnd.oci.image.index.v1+json", digest="sha256:" + "cd" * 32, size=7))
    metadata = md(namespace) + ([("containerd-lease", lease)] if lease else [])
    try:
        stub.Create(images_pb2.CreateImageRequest(image=image), metadata=metadata, timeout=30)
        return grpc.StatusCode.OK
    except grpc.RpcError as err:
        return err.code()


def test_racing_creates_of_the_same_names_give_one_winner_and_one_event_each(serve) -> None:
    """Writers that share a group see each other's writes: of 12 clients
    creating the same 15 names at once, exactly one wins each name, the rest
    get AlreadyExists, and each name yields one /images/create event."""
    from boltimages.api.containerd.services.images.v1 import images_pb2_grpc
    from tests.server.conftest import Collector

    served = serve()
    channels = [grpc.insecure_channel(served.target, options=[("grpc.use_local_subchannel_pool", 1)])
                for _ in range(12)]
    watcher = served.channel()
    collector = Collector(watcher, ['topic=="/images/create"'])
    results: dict[str, list[grpc.StatusCode]] = {f"race/{i}:v": [] for i in range(15)}
    lock = threading.Lock()
    barrier = threading.Barrier(len(channels))

    def client(ch: grpc.Channel) -> None:
        stub = images_pb2_grpc.ImagesStub(ch)
        barrier.wait()
        for name in results:
            code = _create_status(stub, name, "race")
            with lock:
                results[name].append(code)

    try:
        threads = [threading.Thread(target=client, args=(ch,)) for ch in channels]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        collector.wait_for(len(results))
        collector.settle()  # a duplicate would be delivered before the marker
    finally:
        collector.close()
        watcher.close()
        for ch in channels:
            ch.close()
    for name, codes in results.items():
        assert codes.count(grpc.StatusCode.OK) == 1, (name, codes)
        assert codes.count(grpc.StatusCode.ALREADY_EXISTS) == len(channels) - 1, (name, codes)
    assert len(collector.got) == len(results), [e.topic for e in collector.got]


def test_a_write_that_fails_half_way_among_concurrent_ones_changes_nothing_else(serve) -> None:
    """A Create that names a missing lease fails only after it created its
    namespace's buckets: in a shared group that spoils the transaction. Its
    client must get NotFound, and every other client its image."""
    from boltimages.api.containerd.services.images.v1 import images_pb2, images_pb2_grpc

    served = serve()
    channels = [grpc.insecure_channel(served.target, options=[("grpc.use_local_subchannel_pool", 1)])
                for _ in range(8)]
    rounds = 6
    codes: dict[tuple[int, int], grpc.StatusCode] = {}
    barrier = threading.Barrier(len(channels))

    def client(index: int, ch: grpc.Channel) -> None:
        stub = images_pb2_grpc.ImagesStub(ch)
        for r in range(rounds):
            barrier.wait()
            namespace = f"fresh{r}"  # new each round: the failing Create writes its buckets first
            if index == 0:
                codes[(index, r)] = _create_status(stub, f"leased/{r}:v", namespace, lease="no-such-lease",
                                                   labels={"containerd.io/gc.expire": "2099-01-01T00:00:00Z"})
            else:
                codes[(index, r)] = _create_status(stub, f"img/{index}/{r}:v", namespace)

    try:
        threads = [threading.Thread(target=client, args=(i, ch)) for i, ch in enumerate(channels)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        stub = images_pb2_grpc.ImagesStub(channels[0])
        for r in range(rounds):
            names = {im.name for im in stub.List(images_pb2.ListImagesRequest(), metadata=md(f"fresh{r}"),
                                                 timeout=10).images}
            assert names == {f"img/{i}/{r}:v" for i in range(1, len(channels))}
    finally:
        for ch in channels:
            ch.close()
    for (index, r), code in codes.items():
        assert code == (grpc.StatusCode.NOT_FOUND if index == 0 else grpc.StatusCode.OK), (index, r, code)
