"""containerd.services.snapshots.v1.Snapshots, metadata side only.

containerd's metadata file records every snapshot a namespace owns
(``v1/<ns>/snapshots/<snapshotter>/<key>``: parent, createdat, updatedat,
labels, and the backend's key under ``name``). Clients ask Stat to learn
whether an image is unpacked (``ctr images check``'s UNPACKED column), so we
answer Stat and List from those records. The kind (active, view, committed)
lives only in the snapshotter's own file (store/snapshot_kinds.py): when the
metadata file sits in a containerd root that has it, kinds are read from
there and, as containerd does, a record its snapshotter no longer holds is
left out of List (Stat: NotFound); without that file the kind is UNKNOWN
(which ``ctr snapshots ls`` prints as "Committed": nothing better can be
known). Preparing, mounting, committing or removing snapshots needs
containerd and answers Unimplemented. Any snapshotter name is accepted: we
cannot know which ones the node's containerd loads.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Optional, Sequence

import grpc

from ..api.containerd.services.snapshots.v1 import snapshots_pb2 as api
from ..api.containerd.services.snapshots.v1 import snapshots_pb2_grpc
from ..errors import InvalidArgument, NotFound
from ..store import layout
from ..store.snapshot_kinds import SnapshotKinds
from .record_fields import fill_times_and_labels, info_adaptor, namespace_bucket
from .status import RawStatus, grpc_errors, namespace, parse_filters_once

PARENT_KEY = b"parent"
#: the metadata record's key naming the snapshot in the snapshotter's own store
BACKEND_KEY = b"name"
#: containerd's filter values for the kinds (metadata/adaptors.go); UNKNOWN matches nothing
KIND_NAMES = {api.VIEW: "view", api.ACTIVE: "active", api.COMMITTED: "committed"}
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
    fields = info_adaptor(info, ("name", "parent"))

    def adaptor(path: Sequence[str]) -> tuple[str, bool]:
        if path and path[0] == "kind":
            name = KIND_NAMES.get(info.kind)
            return (name, True) if name is not None else ("", False)
        return fields(path)
    return adaptor


def _with_kinds(kinds: SnapshotKinds, snapshotter: str,
                records: list[tuple[api.Info, bytes]]) -> list[api.Info]:
    """The infos with their kinds; those the snapshotter's file lacks are
    dropped, as containerd's Walk skips them. Unchanged (UNKNOWN) when the
    file cannot tell."""
    found = kinds.kinds(snapshotter, [backend for _, backend in records])
    if found is None:
        return [info for info, _ in records]
    out = []
    for info, backend in records:
        kind = found.get(backend)
        if kind is not None:
            info.kind = kind
            out.append(info)
    return out


def _require_snapshotter(name: str) -> None:
    if not name:
        raise InvalidArgument("snapshotter argument missing")


class SnapshotsServicer(snapshots_pb2_grpc.SnapshotsServicer):
    def __init__(self, db: Any, kinds: Optional[SnapshotKinds] = None) -> None:
        self.db = db
        self.kinds = kinds or SnapshotKinds(None)

    @grpc_errors
    def Stat(self, request: api.StatSnapshotRequest, context: grpc.ServicerContext) -> api.StatSnapshotResponse:
        _require_snapshotter(request.snapshotter)
        ns = namespace(context)

        def read(tx: Any) -> Optional[tuple[api.Info, bytes]]:
            bucket = _snapshotter_bucket(tx, ns, request.snapshotter)
            record = bucket.bucket(request.key.encode()) if bucket is not None and request.key else None
            return (_info(request.key, record), record.get(BACKEND_KEY) or b"") if record is not None else None

        found = self.db.view(read)
        infos = _with_kinds(self.kinds, request.snapshotter, [found]) if found is not None else []
        if not infos:
            raise NotFound(f"snapshot {request.key} does not exist")
        return api.StatSnapshotResponse(info=infos[0])

    @grpc_errors
    def List(self, request: api.ListSnapshotsRequest,
             context: grpc.ServicerContext) -> Iterator[api.ListSnapshotsResponse]:
        _require_snapshotter(request.snapshotter)
        ns = namespace(context)
        selected = parse_filters_once(list(request.filters))

        def read(tx: Any) -> list[tuple[api.Info, bytes]]:
            bucket = _snapshotter_bucket(tx, ns, request.snapshotter)
            if bucket is None:
                return []
            out = []
            for key, value in bucket.items():
                if value is not None:
                    continue
                record = bucket.bucket(key)
                out.append((_info(key.decode("utf-8", "surrogateescape"), record), record.get(BACKEND_KEY) or b""))
            return out

        # the kind is known only after the snapshotter's file is read, and filters may name it
        infos = [info for info in _with_kinds(self.kinds, request.snapshotter, self.db.view(read))
                 if selected.match(_adaptor(info))]
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
