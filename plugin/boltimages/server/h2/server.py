"""Our own gRPC server: listeners, method registry and dispatch, graceful stop.

It presents the part of ``grpc.Server`` that generated ``add_*Servicer_to_server``
functions, grpc_health and grpc_reflection use, so the servicers run unchanged.

Threading: one asyncio loop thread owns every socket. Cheap read-only unary
methods run inline on that thread (see ``INLINE_METHODS``); everything else
runs in a ThreadPoolExecutor and hands its answer back with
call_soon_threadsafe, except overlapping writes of the methods the
application groups: those run on the loop thread in shared transactions
(write_groups.py).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import threading
import time
from concurrent import futures
from typing import Any, Callable, Iterable, Optional

import grpc

from . import hpack
from .connection import H2Connection, Stream
from .grpc_call import CONTENT_TYPE, Call, RESPONSE_HEADERS, status_fields, parse_timeout
from .limits import DEFAULT_LIMITS, Limits
from .write_groups import WriteGroups

log = logging.getLogger("boltimages.server.h2")

#: Methods run on the loop thread itself. A thread hand-off costs more than
#: these calls do: they only read (short read transactions, mostly in C with
#: the GIL released, never waiting for a commit's fsync) or touch no store at
#: all. Writes wait for the group commit, and streams live long, so those go
#: to the pool; anything not listed here does too. Images/List stays pooled
#: although it only reads: its cost grows with the namespace (about a second
#: for 100,000 images), and on the loop it would stall every other client.
#: (A unary write that arrives alone also runs on the loop: see Call._alone;
#: so do overlapping writes of the methods the application groups, together
#: in one transaction per group: see write_groups.py.)
INLINE_METHODS = frozenset((
    "/containerd.services.images.v1.Images/Get",
    "/containerd.services.namespaces.v1.Namespaces/Get",
    "/containerd.services.namespaces.v1.Namespaces/List",
    "/containerd.services.version.v1.Version/Version",
    "/containerd.services.introspection.v1.Introspection/Plugins",
    "/containerd.services.introspection.v1.Introspection/Server",
    "/containerd.services.introspection.v1.Introspection/PluginInfo",
    "/containerd.services.leases.v1.Leases/List",
    "/containerd.services.leases.v1.Leases/ListResources",
    "/containerd.services.content.v1.Content/Info",
    "/grpc.health.v1.Health/Check",
))

#: Unary methods that never run on the loop thread, even when nothing else is
#: in flight: their cost has no small bound.
ALWAYS_POOLED = frozenset((
    "/containerd.services.images.v1.Images/List",
))

#: once calls are seen to overlap, writes stay in the pool for this long
CONCURRENCY_MEMORY_SECONDS = 0.25

#: a streaming producer waits once this many response bytes are queued but unsent
STREAM_HIGH_WATER = 1 << 20
#: after the grace period: how long clients get to read their cancellations and
#: close before we close their connections ourselves
STOP_DRAIN_SECONDS = 0.5
#: then how long a close may wait for a client that does not read before we drop its data
STOP_CLOSE_SECONDS = 0.2


#: accept() errors that mean "no descriptor or memory for now", not "this client failed"
_ACCEPT_RESOURCE_ERRORS = frozenset((errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM))
#: connections accepted per wake-up of a listening socket, before other work gets its turn
_ACCEPT_BATCH = 64


class _Listener:
    """Accepts connections on one listening socket, on the loop thread.

    Instead of loop.create_server: that calls listen(100) again on the
    socket we bound (1,000 connects at once then meet refusals), and when
    accept() fails with EMFILE asyncio logs a traceback for each of up to
    100 retries per wake-up and schedules a retry for each (69,000 tracebacks
    in 20 s with RLIMIT_NOFILE reached). Here such an error stops accepting
    for limits.accept_retry_seconds (the clients wait in the backlog) and is
    logged at most once per limits.accept_log_seconds, with a count.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket,
                 protocol: Callable[[], H2Connection], limits: Limits) -> None:
        self.loop = loop
        self.sock = sock
        self.protocol = protocol
        self.limits = limits
        self.closed = False
        self._retry: Optional[asyncio.TimerHandle] = None
        self._failures = 0
        self._logged_at = float("-inf")

    def start(self) -> None:
        if not self.closed:
            self._retry = None
            self.loop.add_reader(self.sock.fileno(), self._accept)

    def _accept(self) -> None:
        for _ in range(_ACCEPT_BATCH):
            try:
                conn, _addr = self.sock.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError as exc:
                if exc.errno not in _ACCEPT_RESOURCE_ERRORS:
                    log.warning("accept failed: %s", exc.strerror or exc)
                    return
                self._out_of_resources(exc)
                return
            conn.setblocking(False)
            self.loop.create_task(self._connect(conn))

    async def _connect(self, conn: socket.socket) -> None:
        try:
            await self.loop.connect_accepted_socket(self.protocol, conn)
        except OSError as exc:
            log.debug("cannot set up an accepted connection: %s", exc)
            conn.close()

    def _out_of_resources(self, exc: OSError) -> None:
        self._failures += 1
        now = time.monotonic()
        if now - self._logged_at >= self.limits.accept_log_seconds:
            log.warning("cannot accept connections: %s (%d times since the last report); "
                        "pausing accept for %.1f s", exc.strerror or exc, self._failures,
                        self.limits.accept_retry_seconds)
            self._logged_at = now
            self._failures = 0
        self.loop.remove_reader(self.sock.fileno())
        self._retry = self.loop.call_later(self.limits.accept_retry_seconds, self.start)

    def close(self) -> None:
        self.closed = True
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        try:
            self.loop.remove_reader(self.sock.fileno())
        except (ValueError, OSError):
            pass  # the socket is already closed
        # closed now, so connects during the grace period are refused, not left in the backlog
        self.sock.close()


class _HandlerCallDetails(grpc.HandlerCallDetails):
    def __init__(self, method: str, invocation_metadata: Any) -> None:
        self.method = method
        self.invocation_metadata = invocation_metadata


class _Rejected:
    """Stands in for a call we answered at once (unknown method, bad request)."""

    def on_data(self, data: bytes) -> None:
        pass

    def on_end(self) -> None:
        pass

    def on_reset(self) -> None:
        pass

    def on_sent(self, nbytes: int) -> None:
        pass


_REJECTED = _Rejected()
_HTTP_415 = hpack.encode_headers([(b":status", b"415"), (b"content-type", b"text/plain")])


class NativeServer:
    """Subset of grpc.Server: add_*_handlers, add_insecure_port, start, stop."""

    def __init__(self, executor: futures.ThreadPoolExecutor, max_receive_message_length: int = 16 << 20,
                 max_send_message_length: int = 16 << 20, inline_methods: Iterable[str] = INLINE_METHODS,
                 log_calls: bool = False, limits: Limits = DEFAULT_LIMITS) -> None:
        self.executor = executor
        self.limits = limits
        #: streaming calls holding a worker now, and how many may (limits.py)
        self.streaming_cap = limits.streaming_cap(getattr(executor, "_max_workers", 0) or 1)
        self._streaming = 0
        self._streaming_lock = threading.Lock()
        #: open streams over all connections (loop thread), and their budget
        self.open_streams = 0
        self.stream_budget = limits.max_streams_total
        self.max_recv = max_receive_message_length
        self.max_send = max_send_message_length
        self.stream_high_water = STREAM_HIGH_WATER
        self.inline_methods = frozenset(inline_methods)
        self.always_pooled = ALWAYS_POOLED
        # loop-thread state for running lone writes inline (Call._alone)
        self.pooled_in_flight = 0
        self.last_concurrent = float("-inf")
        self.concurrency_memory = CONCURRENCY_MEMORY_SECONDS
        self.last_inline_conn: Any = None
        self.last_inline_end = float("-inf")
        #: grouped writes (write_groups.py), when the application enables them
        self.groups: Optional[WriteGroups] = None
        self.log_calls = log_calls
        self._methods: dict[str, grpc.RpcMethodHandler] = {}
        #: pooled methods whose answer is sometimes ready at once (see add_ready_answers)
        self.ready_answers: dict[str, Callable[[Any, Any], Any]] = {}
        self._generic: list[grpc.GenericRpcHandler] = []
        self._sockets: list[socket.socket] = []
        self._listeners: list[_Listener] = []
        self.connections: set[H2Connection] = set()
        self.loop: Optional[asyncio.AbstractEventLoop] = None
        self._thread: Optional[threading.Thread] = None
        self._started = False
        self._stopping = False

    def enable_write_groups(self, open_group: Callable[[], Any], methods: Iterable[str]) -> None:
        """Run these unary write methods in write groups when calls overlap
        (see write_groups.py). ``open_group`` is the store's."""
        if self._started:
            raise RuntimeError("enable write groups before start()")
        self.groups = WriteGroups(open_group, methods)

    # ------------------------------------------------------------ registration (grpc.Server API)
    def add_generic_rpc_handlers(self, generic_rpc_handlers: Iterable[grpc.GenericRpcHandler]) -> None:
        for handler in generic_rpc_handlers:
            # method_handlers_generic_handler keeps its table: copy it out so
            # dispatch is one dict lookup rather than a call per handler
            table = getattr(handler, "_method_handlers", None)
            if isinstance(table, dict) and all(isinstance(k, str) and k.startswith("/") for k in table):
                self._methods.update(table)
            else:
                self._generic.append(handler)

    def add_registered_method_handlers(self, service_name: str, method_handlers: dict[str, Any]) -> None:
        for method, handler in method_handlers.items():
            self._methods[f"/{service_name}/{method}"] = handler

    def add_ready_answers(self, service_name: str, ready: dict[str, Callable[[Any, Any], Any]]) -> None:
        """For pooled unary methods: ``ready[method](request, context)``
        runs on the loop thread before the call goes to a worker, and
        returns the answer when it is already at hand (no store work, no
        wait), or None to run the method as usual. It must cost about a
        dict lookup, whatever the store holds: every client waits for it."""
        for method, fn in ready.items():
            self.ready_answers[f"/{service_name}/{method}"] = fn

    def add_insecure_port(self, address: str) -> int:
        """Bind now (so the caller's umask applies to a unix socket); returns the TCP port, or 1."""
        if self._started:
            raise RuntimeError("cannot add ports after start()")
        if address.startswith("unix:"):
            path = address[len("unix:"):]
            if path.startswith("//"):
                path = path[2:]
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.bind(path)
                sock.listen(self.limits.listen_backlog)
            except OSError as exc:
                sock.close()
                raise RuntimeError(f"cannot bind {path}: {exc.strerror or exc}") from None
            self._sockets.append(sock)
            return 1
        host, _, port = address.rpartition(":")
        host = host[1:-1] if host.startswith("[") else host
        try:
            infos = socket.getaddrinfo(host or "127.0.0.1", int(port), type=socket.SOCK_STREAM)
        except (OSError, ValueError) as exc:
            raise RuntimeError(f"cannot resolve {address}: {exc}") from None
        family, kind, proto, _, sockaddr = infos[0]
        sock = socket.socket(family, kind, proto)
        try:
            # SO_REUSEADDR only lets us rebind past TIME_WAIT; a live listener still refuses us
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(sockaddr)
            sock.listen(self.limits.listen_backlog)
        except OSError as exc:
            sock.close()
            if exc.errno == errno.EADDRINUSE:
                return 0  # grpcio's answer for a port in use; the caller words the error
            raise RuntimeError(f"cannot bind {address}: {exc.strerror or exc}") from None
        self._sockets.append(sock)
        return sock.getsockname()[1]

    # ------------------------------------------------------------ lifecycle
    def start(self) -> None:
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self.loop = loop
            asyncio.set_event_loop(loop)
            try:
                for sock in self._sockets:
                    sock.setblocking(False)
                    listener = _Listener(loop, sock, self._protocol, self.limits)
                    listener.start()
                    self._listeners.append(listener)
            except BaseException as exc:  # noqa: BLE001 - reported to start()'s caller
                failure.append(exc)
                ready.set()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.close()

        self._thread = threading.Thread(target=run, name="h2-loop", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            raise RuntimeError(f"cannot start the server: {failure[0]}")
        self._started = True

    def _protocol(self) -> H2Connection:
        assert self.loop is not None
        conn = H2Connection(self, self.loop, self.connections.discard)
        self.connections.add(conn)
        return conn

    def stop(self, grace: Optional[float]) -> threading.Event:
        """Refuse new calls now; cancel what is left after ``grace`` seconds. Set when all is done."""
        done = threading.Event()
        loop = self.loop
        if loop is None or self._stopping:
            if self._stopping and self._thread is not None:
                threading.Thread(target=lambda: (self._thread.join(), done.set()), daemon=True).start()
            else:
                done.set()
            return done
        self._stopping = True

        async def shutdown() -> None:
            for listener in self._listeners:
                listener.close()
            for conn in list(self.connections):
                conn.begin_shutdown()
            # a connection leaves the set only once its socket is closed, i.e.
            # after its last frames were written and the client closed its end
            await self._connections_gone(time.monotonic() + (grace or 0.0))
            for conn in list(self.connections):
                conn.abort_all()
            # stopping the loop with transports still open would drop what
            # they have not written yet (the cancellations): let them drain
            await self._connections_gone(time.monotonic() + STOP_DRAIN_SECONDS)
            for conn in list(self.connections):
                conn.hard_close()
            await self._connections_gone(time.monotonic() + STOP_CLOSE_SECONDS)
            for conn in list(self.connections):
                conn.hard_close(drop_unsent=True)
            await asyncio.sleep(0)  # connection_lost runs one iteration after abort()
            loop.stop()

        def stopper() -> None:
            asyncio.ensure_future(shutdown())

        loop.call_soon_threadsafe(stopper)

        def join() -> None:
            assert self._thread is not None
            self._thread.join()
            if self.groups is not None:
                self.groups.close()  # a commit in flight ends before the store closes
            for sock in self._sockets:
                try:
                    sock.close()
                except OSError:
                    pass
            done.set()

        threading.Thread(target=join, name="h2-stop", daemon=True).start()
        return done

    async def _connections_gone(self, deadline: float) -> None:
        while self.connections and time.monotonic() < deadline:
            await asyncio.sleep(0.02)

    def wait_for_termination(self, timeout: Optional[float] = None) -> bool:
        if self._thread is not None:
            self._thread.join(timeout)
            return not self._thread.is_alive()
        return True

    # ------------------------------------------------------------ streaming calls (any thread)
    def acquire_stream_slot(self, call: Call) -> bool:
        with self._streaming_lock:
            if self._streaming >= self.streaming_cap:
                return False
            self._streaming += 1
            call.stream_slot = True
            return True

    def release_stream_slot(self, call: Call) -> None:
        """When the call ends or its thread returns, whichever is first: a
        cancelled stream's thread is about to be free, and a client that
        opens the next one at once must not be refused for it."""
        with self._streaming_lock:
            if call.stream_slot:
                call.stream_slot = False
                self._streaming -= 1

    # ------------------------------------------------------------ dispatch (loop thread)
    def _lookup(self, method: str, metadata: Any) -> Optional[grpc.RpcMethodHandler]:
        handler = self._methods.get(method)
        if handler is None and self._generic:
            details = _HandlerCallDetails(method, metadata)
            for generic in self._generic:
                handler = generic.service(details)
                if handler is not None:
                    break
        return handler

    def new_call(self, conn: H2Connection, stream: Stream, headers: list[tuple[bytes, bytes]]) -> Any:
        method = content_type = timeout = None
        http_method = None
        for name, value in headers:
            if name == b":path":
                method = value
            elif name == b"content-type":
                content_type = value
            elif name == b"grpc-timeout":
                timeout = value
            elif name == b":method":
                http_method = value
        if http_method != b"POST" or method is None:
            conn.send_headers(stream, hpack.encode_headers([(b":status", b"405")]), end_stream=True)
            return _REJECTED
        if content_type is None or not (content_type == CONTENT_TYPE or content_type.startswith(b"application/grpc+")
                                        or content_type.startswith(b"application/grpc;")):
            conn.send_headers(stream, _HTTP_415 + status_fields(grpc.StatusCode.INTERNAL,
                                                               f"invalid gRPC request content-type {content_type!r}"),
                              end_stream=True)
            return _REJECTED
        path = method.decode("utf-8", "replace")
        deadline = None
        if timeout is not None:
            try:
                deadline = time.monotonic() + parse_timeout(timeout)
            except ValueError as exc:
                return self._reject(conn, stream, grpc.StatusCode.INTERNAL, str(exc))
        handler = self._lookup(path, None)
        if self.log_calls:
            namespace = next((v.decode("utf-8", "replace") for k, v in headers if k == b"containerd-namespace"), "-")
            log.debug("call", extra={"method": path, "ns": namespace})
        if handler is None:
            return self._reject(conn, stream, grpc.StatusCode.UNIMPLEMENTED, "Method not found!")
        if self._stopping:
            return self._reject(conn, stream, grpc.StatusCode.UNAVAILABLE, "server is shutting down")
        return Call(self, conn, stream, path, handler, headers, path in self.inline_methods, deadline)

    @staticmethod
    def _reject(conn: H2Connection, stream: Stream, code: grpc.StatusCode, details: str) -> _Rejected:
        conn.send_headers(stream, RESPONSE_HEADERS + status_fields(code, details), end_stream=True)
        return _REJECTED
