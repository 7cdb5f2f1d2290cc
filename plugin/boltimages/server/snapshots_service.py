"""containerd.services.snapshots.v1.Snapshots, metadata side only.

containerd's metadata file records every snapshot a namespace owns
(``v1/<ns>/snapshots/<snapshotter>/<key>``: parent, createdat, updatedat,
labels, and the backend's key under ``name``). Clients ask Stat to learn
whether an image is unpacked (``ctr images check``'s UNPACKED column), so we
answer Stat and List from those records. The kind (active, view, committed)
lives only in the snapshotter's own store, which we do not have: it is
reported as UNKNOWN. Preparing, mounting, committing or removing snapshots
needs containerd and answers Unimplemented. Any snapshotter name is accepted:
we cannot know which ones the node's containerd loads.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Optional, Sequence

import grpc

from ..api.containerd.services.snapshots.v1 import snapshots_pb2 as api
from ..api.containerd.services.snapshots.v1 import snapshots_pb2_grpc
from ..errors import InvalidArgument, NotFound
from ..store import layout
from .record_fields import fill_times_and_labels, info_adaptor, namespace_bucket
from .status import RawStatus, grpc_errors, namespace, parse_filters_once

PARENT_KEY = b"parent"
LIST_BATCH = 100
_READ_ONLY = "boltimages serves snapshot records read-only; snapshots are made by containerd"


def _snapshotter_bucket(tx: Any, ns: str, snapshotter: str) -> Any:
    return namespace_bucket(tx, ns, layout.SNAPSHOTS_BUCKET, snapshotter.encode())


def _info(key: str, bucket: Any) -> api.Info:
    parent = bucket.get(PARENT_KEY)
    info = api.Info(name=key, parent=parent.decode("utf-8", "surrogateescape") if parent else "",
                    kind=api.UNKNOWN)
    fill_times_and_labels(info, bucket)
    return info


def _adaptor(info: api.Info) -> Callable[[Sequence[str]], tuple[str, bool]]:
    return info_adaptor(info, ("name", "parent"))


def _require_snapshotter(name: str) -> None:
    if not name:
        raise InvalidArgument("snapshotter argument missing")


class SnapshotsServicer(snapshots_pb2_grpc.SnapshotsServicer):
    def __init__(self, db: Any) -> None:
        self.db = db

    @grpc_errors
    def Stat(self, request: api.StatSnapshotRequest, context: grpc.ServicerContext) -> api.StatSnapshotResponse:
        _require_snapshotter(request.snapshotter)
        ns = namespace(context)

        def read(tx: Any) -> Optional[api.Info]:
            bucket = _snapshotter_bucket(tx, ns, request.snapshotter)
            record = bucket.bucket(request.key.encode()) if bucket is not None and request.key else None
            return _info(request.key, record) if record is not None else None

        info = self.db.view(read)
        if info is None:
            raise NotFound(f"snapshot {request.key} does not exist")
        return api.StatSnapshotResponse(info=info)

    @grpc_errors
    def List(self, request: api.ListSnapshotsRequest,
             context: grpc.ServicerContext) -> Iterator[api.ListSnapshotsResponse]:
        _require_snapshotter(request.snapshotter)
        ns = namespace(context)
        selected = parse_filters_once(list(request.filters))

        def read(tx: Any) -> list[api.Info]:
            bucket = _snapshotter_bucket(tx, ns, request.snapshotter)
            if bucket is None:
                return []
            out = []
            for key, value in bucket.items():
                if value is not None:
                    continue
                info = _info(key.decode("utf-8", "surrogateescape"), bucket.bucket(key))
                if selected.match(_adaptor(info)):
                    out.append(info)
            return out

        infos = self.db.view(read)
        for start in range(0, len(infos), LIST_BATCH):
            yield api.ListSnapshotsResponse(info=infos[start:start + LIST_BATCH])

    def _refuse(self, name: str) -> RawStatus:
        return RawStatus(grpc.StatusCode.UNIMPLEMENTED, f"{name}: {_READ_ONLY}")

    @grpc_errors
    def Prepare(self, request: Any, context: grpc.ServicerContext) -> Any:
        raise self._refuse("Prepare")

    @grpc_errors
    def View(self, request: Any, context: grpc.ServicerContext) -> Any:
        raise self._refuse("View")

    @grpc_errors
    def Mounts(self, request: Any, context: grpc.ServicerContext) -> Any:
        raise self._refuse("Mounts")

    @grpc_errors
    def Commit(self, request: Any, context: grpc.ServicerContext) -> Any:
        raise self._refuse("Commit")

    @grpc_errors
    def Remove(self, request: Any, context: grpc.ServicerContext) -> Any:
        raise self._refuse("Remove")

    @grpc_errors
    def Update(self, request: Any, context: grpc.ServicerContext) -> Any:
        raise self._refuse("Update")

    @grpc_errors
    def Usage(self, request: Any, context: grpc.ServicerContext) -> Any:
        raise self._refuse("Usage")

    @grpc_errors
    def Cleanup(self, request: Any, context: grpc.ServicerContext) -> Any:
        raise self._refuse("Cleanup")
