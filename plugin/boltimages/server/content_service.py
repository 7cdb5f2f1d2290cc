"""containerd.services.content.v1.Content, read side only.

containerd keeps content records (``v1/<ns>/content/blob/<digest>``: size,
createdat, updatedat, labels) in the metadata file and the bytes under its
content directory (``<root>/io.containerd.content.v1.content/blobs/<alg>/<hex>``).
Clients such as ``ctr images ls`` and ``ctr images check`` call Info and Read
to size and verify images, and branch on NotFound; without this service they
would get Unimplemented and report errors where containerd reports
"unavailable". We answer Info and List from the metadata file, and Read from
the content directory when one is configured (else NotFound: the bytes are
not available here). Writing content stays with containerd: Update, Delete,
Write, Status, ListStatuses and Abort answer Unimplemented.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Iterator, Optional, Sequence

import grpc

from ..api.containerd.services.content.v1 import content_pb2 as api
from ..api.containerd.services.content.v1 import content_pb2_grpc
from ..errors import NotFound
from ..store import layout
from ..store.codec import decode_varint_lenient
from ..store.validation import digest_problem
from .record_fields import fill_times_and_labels, info_adaptor, namespace_bucket
from .status import RawStatus, grpc_errors, namespace, parse_filters_once

#: bytes per ReadContentResponse (containerd streams 1 MiB buffers)
READ_CHUNK = 1 << 20
#: Infos per ListContentResponse, as containerd batches them
LIST_BATCH = 100


def _blobs(tx: Any, ns: str) -> Any:
    return namespace_bucket(tx, ns, layout.CONTENT_BUCKET, layout.BLOB_BUCKET)


def _info(digest: str, bucket: Any) -> api.Info:
    info = api.Info(digest=digest)
    raw = bucket.get(layout.SIZE_KEY)
    if raw:
        info.size = decode_varint_lenient(raw)
    fill_times_and_labels(info, bucket)
    return info


def _adaptor(info: api.Info) -> Callable[[Sequence[str]], tuple[str, bool]]:
    return info_adaptor(info, ("digest",))


_WRITES_ELSEWHERE = "boltimages serves content read-only; write content through containerd"


class ContentServicer(content_pb2_grpc.ContentServicer):
    def __init__(self, db: Any, content_root: Optional[str]) -> None:
        self.db = db
        self.content_root = content_root

    def _lookup(self, ns: str, digest: str) -> api.Info:
        def read(tx: Any) -> Optional[api.Info]:
            blobs = _blobs(tx, ns)
            bucket = blobs.bucket(digest.encode()) if blobs is not None else None
            return _info(digest, bucket) if bucket is not None else None
        info = self.db.view(read)
        if info is None:
            raise NotFound(f"content digest {digest}")
        return info

    @grpc_errors
    def Info(self, request: api.InfoRequest, context: grpc.ServicerContext) -> api.InfoResponse:
        if digest_problem(request.digest):
            raise RawStatus(grpc.StatusCode.INVALID_ARGUMENT, f'"{request.digest}" failed validation')
        return api.InfoResponse(info=self._lookup(namespace(context), request.digest))

    @grpc_errors
    def List(self, request: api.ListContentRequest,
             context: grpc.ServicerContext) -> Iterator[api.ListContentResponse]:
        ns = namespace(context)
        selected = parse_filters_once(list(request.filters))

        def read(tx: Any) -> list[api.Info]:
            blobs = _blobs(tx, ns)
            out = []
            if blobs is None:
                return out
            for key, value in blobs.items():
                digest = key.decode("utf-8", "surrogateescape")
                if value is not None or digest_problem(digest):
                    continue  # containerd skips keys that are not digests
                info = _info(digest, blobs.bucket(key))
                info.ClearField("updated_at")  # containerd's List leaves it out
                if selected.match(_adaptor(info)):
                    out.append(info)
            return out

        infos = self.db.view(read)
        for start in range(0, len(infos), LIST_BATCH):
            yield api.ListContentResponse(info=infos[start:start + LIST_BATCH])

    @grpc_errors
    def Read(self, request: api.ReadContentRequest,
             context: grpc.ServicerContext) -> Iterator[api.ReadContentResponse]:
        problem = digest_problem(request.digest)
        if problem:
            raise RawStatus(grpc.StatusCode.INVALID_ARGUMENT, f"{request.digest}: {problem}")
        info = self._lookup(namespace(context), request.digest)
        alg, _, hexpart = request.digest.partition(":")
        path = os.path.join(self.content_root, "blobs", alg, hexpart) if self.content_root else None
        try:
            fh = open(path, "rb") if path else None
        except FileNotFoundError:
            fh = None
        if fh is None:
            where = f" expected at {path}" if path else " (no content directory configured)"
            raise NotFound(f"blob {request.digest}{where}: content digest {request.digest}")
        with fh:
            offset = max(0, request.offset)
            if offset > info.size:
                raise RawStatus(grpc.StatusCode.OUT_OF_RANGE, f"read past object length {info.size} bytes")
            size = request.size
            if size <= 0 or offset + size > info.size:
                size = info.size - offset
            fh.seek(offset)
            sent = 0
            while sent < size:
                data = fh.read(min(READ_CHUNK, size - sent))
                if not data:
                    break
                yield api.ReadContentResponse(offset=sent, data=data)
                sent += len(data)

    def _unimplemented(self, name: str) -> RawStatus:
        return RawStatus(grpc.StatusCode.UNIMPLEMENTED, f"{name}: {_WRITES_ELSEWHERE}")

    @grpc_errors
    def Update(self, request: Any, context: grpc.ServicerContext) -> Any:
        raise self._unimplemented("Update")

    @grpc_errors
    def Delete(self, request: Any, context: grpc.ServicerContext) -> Any:
        raise self._unimplemented("Delete")

    @grpc_errors
    def Status(self, request: Any, context: grpc.ServicerContext) -> Any:
        raise self._unimplemented("Status")

    @grpc_errors
    def ListStatuses(self, request: Any, context: grpc.ServicerContext) -> Any:
        raise self._unimplemented("ListStatuses")

    @grpc_errors
    def Abort(self, request: Any, context: grpc.ServicerContext) -> Any:
        raise self._unimplemented("Abort")

    def Write(self, request_iterator: Any, context: grpc.ServicerContext) -> Any:
        context.abort(grpc.StatusCode.UNIMPLEMENTED, f"Write: {_WRITES_ELSEWHERE}")
