"""Ready answers: a pooled method answered on the loop thread when its answer
is already at hand (NativeServer.add_ready_answers), and the one user of it,
an unfiltered Images/List of a namespace whose framed answer an earlier List
kept (ImagesServicer.ready_list)."""

from __future__ import annotations

import pathlib
import threading
from concurrent import futures
from typing import Any, Iterator, Optional

import grpc
import pytest
from google.protobuf import field_mask_pb2

from boltimages.api.containerd.services.images.v1 import images_pb2 as pb, images_pb2_grpc
from boltimages.server.h2 import NativeServer
from boltimages.server.images_service import ImagesServicer, add_to_server
from boltimages.store.db import MetadataDB

SERVICE = "t.Ready"


class Transport:
    """Our transport with one pooled method, Work, and a ready answer for it."""

    def __init__(self, tmp: pathlib.Path) -> None:
        self.worked: list[bytes] = []
        self.ready_threads: set[int] = set()
        self.executor = futures.ThreadPoolExecutor(4)
        self.server = NativeServer(self.executor, inline_methods=())
        self.server.always_pooled = frozenset((f"/{SERVICE}/Work",))

        def work(request: bytes, context: Any) -> bytes:
            self.worked.append(request)
            return b"worked:" + request

        def ready(request: bytes, context: Any) -> Optional[bytes]:
            self.ready_threads.add(threading.get_ident())
            if request == b"raise":
                raise RuntimeError("a bug in a ready answer")
            return b"ready:" + request if request.startswith(b"r") else None

        self.server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {
            "Work": grpc.unary_unary_rpc_method_handler(work)}),))
        self.server.add_ready_answers(SERVICE, {"Work": ready})
        path = tmp / "ready.sock"
        self.server.add_insecure_port(f"unix:{path}")
        self.server.start()
        self.channel = grpc.insecure_channel(f"unix://{path}")
        self.call = self.channel.unary_unary(f"/{SERVICE}/Work")

    def close(self) -> None:
        self.channel.close()
        assert self.server.stop(1.0).wait(10)
        self.executor.shutdown(wait=True)


@pytest.fixture
def transport(tmp_path: pathlib.Path) -> Iterator[Transport]:
    t = Transport(tmp_path)
    yield t
    t.close()


def test_a_ready_answer_skips_the_pool_and_none_falls_back(transport: Transport) -> None:
    assert transport.call(b"ready", timeout=10) == b"ready:ready"
    assert transport.worked == []  # the method itself never ran
    assert transport.call(b"plain", timeout=10) == b"worked:plain"
    assert transport.worked == [b"plain"]
    # a ready answer that fails is a bug of ours, not the client's: the method answers
    assert transport.call(b"raise", timeout=10) == b"worked:raise"
    assert transport.worked == [b"plain", b"raise"]
    # every ready answer ran on the loop thread, never in a worker
    assert transport.ready_threads == {transport.server._thread.ident}


class Images:
    """ImagesServicer on our transport over a real file."""

    def __init__(self, tmp: pathlib.Path, grouped: bool = False) -> None:
        self.db = MetadataDB(tmp / "meta.db")
        self.executor = futures.ThreadPoolExecutor(4)
        self.server = NativeServer(self.executor)
        if grouped:  # as serve runs it: concurrent writes share one transaction
            from boltimages.server.app import GROUPED_METHODS
            self.server.enable_write_groups(self.db.open_group, GROUPED_METHODS)
        self.servicer = ImagesServicer(self.db, lambda *event: None)
        add_to_server(self.servicer, self.server)
        path = tmp / "images.sock"
        self.server.add_insecure_port(f"unix:{path}")
        self.server.start()
        self.channel = grpc.insecure_channel(f"unix://{path}")
        self.stub = images_pb2_grpc.ImagesStub(self.channel)

    def call(self, method: str, request: Any, ns: str = "default") -> Any:
        return getattr(self.stub, method)(request, metadata=[("containerd-namespace", ns)], timeout=10)

    def ready(self, filters: tuple[str, ...] = (), ns: Optional[str] = "default") -> Optional[bytes]:
        class Context:
            def invocation_metadata(self) -> tuple:
                return () if ns is None else (("containerd-namespace", ns),)
        return self.servicer.ready_list(pb.ListImagesRequest(filters=list(filters)), Context())

    def names(self, ns: str = "default") -> list[str]:
        return [i.name for i in self.call("List", pb.ListImagesRequest(), ns).images]

    def close(self) -> None:
        self.channel.close()
        assert self.server.stop(1.0).wait(10)
        self.executor.shutdown(wait=True)
        self.db.close()


@pytest.fixture
def images(tmp_path: pathlib.Path) -> Iterator[Images]:
    i = Images(tmp_path)
    yield i
    i.close()


def image(name: str, labels: Optional[dict[str, str]] = None) -> pb.Image:
    out = pb.Image(name=name)
    out.labels.update(labels or {})
    out.target.media_type = "application/vnd.oci.image.manifest.v1+json"
    out.target.digest, out.target.size = "sha256:" + "ab" * 32, 10
    return out


def test_list_answer_is_kept_until_the_next_commit(images: Images) -> None:
    for n in ("b", "a", "c"):
        images.call("Create", pb.CreateImageRequest(image=image(f"x/{n}:1", {"k": n})))
    assert images.ready() is None  # nothing listed since the last commit
    assert images.names() == ["x/a:1", "x/b:1", "x/c:1"]
    kept = images.ready()
    assert kept is not None
    # the kept answer is the List's own answer, byte for byte
    assert pb.ListImagesResponse.FromString(kept) == images.call("List", pb.ListImagesRequest())
    # filters, another namespace and no namespace all need the method itself
    assert images.ready(filters=("labels.k==a",)) is None
    assert images.ready(ns="other") is None
    assert images.ready(ns=None) is None
    # each kind of write ends it (the kept records follow the write: the
    # next List frames them without reading the file), and the next List shows the write
    images.call("Create", pb.CreateImageRequest(image=image("x/d:1")))
    assert images.ready() is None
    assert images.names() == ["x/a:1", "x/b:1", "x/c:1", "x/d:1"]
    images.call("Update", pb.UpdateImageRequest(image=image("x/a:1", {"k": "new"})))
    assert images.ready() is None
    assert images.call("List", pb.ListImagesRequest()).images[0].labels["k"] == "new"
    assert images.ready() is not None
    images.call("Delete", pb.DeleteImageRequest(name="x/b:1"))
    assert images.ready() is None
    assert images.names() == ["x/a:1", "x/c:1", "x/d:1"]
    # a commit elsewhere in the file ends it too: the answer is for one file state
    images.db.update(lambda tx: tx.create_bucket_if_not_exists(b"unrelated"))
    assert images.ready() is None


def test_filtered_and_unfiltered_lists_agree_whichever_comes_first(images: Images) -> None:
    for n in range(20):
        images.call("Create", pb.CreateImageRequest(image=image(f"x/{n:02d}:1", {"g": str(n % 3)})))
    filtered = images.call("List", pb.ListImagesRequest(filters=["labels.g==1"]))
    assert images.ready() is None  # a filtered List keeps no whole answer
    whole = images.call("List", pb.ListImagesRequest())
    again = images.call("List", pb.ListImagesRequest())  # the ready answer
    assert whole == again and len(whole.images) == 20
    assert [i.name for i in filtered.images] == [i.name for i in whole.images if i.labels["g"] == "1"]


def fresh_list(db: MetadataDB, ns: str) -> pb.ListImagesResponse:
    """What a List of ``ns`` answers from the file itself: a new servicer has kept nothing."""
    class Context:
        def invocation_metadata(self) -> tuple:
            return (("containerd-namespace", ns),)
    answer = ImagesServicer(db, lambda *event: None).List(pb.ListImagesRequest(), Context())
    return pb.ListImagesResponse.FromString(answer) if type(answer) is bytes else answer


@pytest.mark.parametrize("grouped", [False, True], ids=["pool", "groups"])
def test_lists_after_writes_show_them_and_untouched_namespaces_keep_their_answer(
        tmp_path: pathlib.Path, grouped: bool) -> None:
    images = Images(tmp_path, grouped=grouped)
    try:
        for ns in ("default", "other"):
            for n in range(5):
                images.call("Create", pb.CreateImageRequest(image=image(f"x/{n}:1", {"k": ns})), ns)
            images.call("List", pb.ListImagesRequest(), ns)
        kept_other = images.ready(ns="other")
        assert kept_other is not None
        writes = [
            ("Create", pb.CreateImageRequest(image=image("x/new:1", {"k": "n"}))),
            ("Update", pb.UpdateImageRequest(image=image("x/1:1", {"k": "labels only"}),
                                              update_mask=field_mask_pb2.FieldMask(paths=["labels"]))),
            ("Update", pb.UpdateImageRequest(image=image("x/2:1", {"k": "whole"}))),
            ("Delete", pb.DeleteImageRequest(name="x/3:1")),
        ]
        for method, request in writes:
            images.call(method, request)
            assert images.ready() is None  # the touched namespace's answer is framed again
            listed = images.call("List", pb.ListImagesRequest())
            assert listed == fresh_list(images.db, "default")
            assert pb.ListImagesResponse.FromString(images.ready()) == listed  # and kept again
            # the other namespace kept its records and its answer through the commit
            assert images.ready(ns="other") == kept_other
        names = [i.name for i in images.call("List", pb.ListImagesRequest()).images]
        assert names == ["x/0:1", "x/1:1", "x/2:1", "x/4:1", "x/new:1"]
        # concurrent writers (one group when grouped), then a List
        with futures.ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda n: images.call("Create", pb.CreateImageRequest(image=image(f"y/{n}:1"))),
                          range(16)))
        listed = images.call("List", pb.ListImagesRequest())
        assert listed == fresh_list(images.db, "default") and len(listed.images) == 21
        assert images.ready(ns="other") == kept_other
        # a Get answered from the kept records agrees with the file
        for name in ("x/1:1", "y/7:1"):
            got = images.call("Get", pb.GetImageRequest(name=name)).image
            assert got == next(i for i in fresh_list(images.db, "default").images if i.name == name)
    finally:
        images.close()
