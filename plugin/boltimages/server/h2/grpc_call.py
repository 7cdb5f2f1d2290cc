"""gRPC over HTTP/2: message framing, status trailers, and the servicer context.

A call's life: the connection hands us request headers (``Call``), then the
DATA payloads and the end of the client's half; we parse the 5-byte prefixed
messages, run the method handler (inline on the loop thread or in the pool,
see ``server.py``), and answer with HEADERS, DATA and a trailing HEADERS that
carries grpc-status (or a single Trailers-Only HEADERS frame for an error
before any message).
"""

from __future__ import annotations

import base64
import collections
import logging
import queue
import threading
import time
from typing import Any, Callable, Optional, Sequence

import grpc

from . import frames, hpack

log = logging.getLogger("boltimages.server.h2")

#: the length prefix of every gRPC message: compressed flag (1) + big-endian length (4)
MESSAGE_PREFIX_LEN = 5
CONTENT_TYPE = b"application/grpc"

#: grpc-timeout units (gRPC over HTTP/2 spec) in seconds
_TIMEOUT_UNITS = {b"H": 3600.0, b"M": 60.0, b"S": 1.0, b"m": 1e-3, b"u": 1e-6, b"n": 1e-9}
#: the spec allows at most 8 digits
_TIMEOUT_MAX_DIGITS = 8

#: request headers that belong to the transport, not to the application's metadata
_TRANSPORT_HEADERS = frozenset((b"content-type", b"te", b"grpc-timeout", b"grpc-encoding",
                                b"grpc-accept-encoding", b"connection"))

Metadatum = collections.namedtuple("Metadatum", ("key", "value"))

RESPONSE_HEADERS = hpack.encode_headers([(b":status", b"200"), (b"content-type", CONTENT_TYPE)])
_OK_TRAILERS = hpack.encode_headers([(b"grpc-status", b"0")])


class RpcFailure(Exception):
    """A call ends with this status (raised inside the transport, never by servicers)."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


class _Abort(Exception):
    """Raised by context.abort(): ends the handler; the status is already on the context."""


# ---------------------------------------------------------------- wire helpers
def percent_encode(text: str) -> bytes:
    """grpc-message encoding: UTF-8, bytes outside printable ASCII and '%' as %XX."""
    raw = text.encode("utf-8", "replace")
    if all(0x20 <= b <= 0x7E and b != 0x25 for b in raw):
        return raw
    return b"".join(bytes([b]) if 0x20 <= b <= 0x7E and b != 0x25 else b"%%%02X" % b for b in raw)


def percent_decode(raw: bytes) -> str:
    out = bytearray()
    i = 0
    while i < len(raw):
        if raw[i] == 0x25 and _is_hex(raw[i + 1:i + 3]):
            out.append(int(raw[i + 1:i + 3], 16))
            i += 3
        else:
            out.append(raw[i])
            i += 1
    return out.decode("utf-8", "replace")


def _is_hex(pair: bytes) -> bool:
    return len(pair) == 2 and all(c in b"0123456789abcdefABCDEF" for c in pair)


def parse_timeout(value: bytes) -> float:
    """Seconds in a grpc-timeout value like b"100m"; ValueError when malformed."""
    digits, unit = value[:-1], value[-1:]
    if not digits or len(digits) > _TIMEOUT_MAX_DIGITS or not digits.isdigit() or unit not in _TIMEOUT_UNITS:
        raise ValueError(f"malformed grpc-timeout {value!r}")
    return int(digits) * _TIMEOUT_UNITS[unit]


def message_prefix(length: int) -> bytes:
    return b"\x00" + length.to_bytes(4, "big")


def _metadata_fields(metadata: Optional[Sequence[tuple[str, Any]]]) -> list[tuple[bytes, bytes]]:
    fields = []
    for key, value in metadata or ():
        name = key.lower().encode("ascii")
        if name.endswith(b"-bin"):
            data = value if isinstance(value, bytes) else str(value).encode()
            fields.append((name, base64.b64encode(data).rstrip(b"=")))
        else:
            fields.append((name, value if isinstance(value, bytes) else str(value).encode("utf-8")))
    return fields


def status_fields(code: grpc.StatusCode, details: str,
                  metadata: Optional[Sequence[tuple[str, Any]]] = None) -> bytes:
    if code is grpc.StatusCode.OK and not details and not metadata:
        return _OK_TRAILERS
    fields = [(b"grpc-status", str(code.value[0]).encode())]
    if details:
        fields.append((b"grpc-message", percent_encode(details)))
    fields += _metadata_fields(metadata)
    return hpack.encode_headers(fields)


def decode_metadata(headers: list[tuple[bytes, bytes]]) -> tuple[Metadatum, ...]:
    out = []
    for name, value in headers:
        if name[:1] == b":" or name in _TRANSPORT_HEADERS:
            continue
        key = name.decode("ascii", "replace")
        if key.endswith("-bin"):
            try:
                out.append(Metadatum(key, base64.b64decode(value + b"=" * (-len(value) % 4))))
            except ValueError:
                continue  # a value that is not base64 is dropped, as grpc does
        else:
            out.append(Metadatum(key, value.decode("utf-8", "replace")))
    return tuple(out)


#: header list (by identity) -> its metadata. The HPACK decoder hands out the
#: same list for a repeated all-indexed block, so a client's repeated calls
#: decode their metadata once. The list is kept in the value so its id stays
#: unique while cached.
_METADATA_CACHE: dict[int, tuple[list, tuple[Metadatum, ...]]] = {}
_METADATA_CACHE_MAX = 256


def _metadata_for(headers: list[tuple[bytes, bytes]]) -> tuple[Metadatum, ...]:
    hit = _METADATA_CACHE.get(id(headers))
    if hit is not None and hit[0] is headers:
        return hit[1]
    metadata = decode_metadata(headers)
    if len(_METADATA_CACHE) >= _METADATA_CACHE_MAX:
        _METADATA_CACHE.clear()
    _METADATA_CACHE[id(headers)] = (headers, metadata)
    return metadata


class MessageReader:
    """Splits a stream's DATA bytes into gRPC messages, enforcing flags and size."""

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self.buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        buf = self.buf
        if not buf and len(data) >= MESSAGE_PREFIX_LEN and data[0] == 0 \
                and len(data) - MESSAGE_PREFIX_LEN == int.from_bytes(data[1:5], "big") <= self.max_size:
            # the usual unary request: exactly one whole message in one DATA
            # frame, taken without going through the buffer (the checks below
            # pass for it: flag 0, within max_size)
            return [data[MESSAGE_PREFIX_LEN:]]
        buf += data
        messages = []
        while len(buf) >= MESSAGE_PREFIX_LEN:
            flag = buf[0]
            length = int.from_bytes(buf[1:5], "big")
            if flag == 1:
                raise RpcFailure(grpc.StatusCode.UNIMPLEMENTED,
                                 "compressed message received but this server supports no compression")
            if flag != 0:
                raise RpcFailure(grpc.StatusCode.INTERNAL, f"invalid message compression flag {flag}")
            if length > self.max_size:
                raise RpcFailure(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                 f"Received message larger than max ({length} vs. {self.max_size})")
            end = MESSAGE_PREFIX_LEN + length
            if len(buf) < end:
                break
            messages.append(bytes(buf[MESSAGE_PREFIX_LEN:end]))
            del buf[:end]
        return messages

    @property
    def partial(self) -> bool:
        return bool(self.buf)


# ---------------------------------------------------------------- context
class Context(grpc.ServicerContext):
    """What servicers see as ``context``: grpcio's ServicerContext behaviour over our transport."""

    def __init__(self, call: "Call", headers: list[tuple[bytes, bytes]], deadline: Optional[float]) -> None:
        #: None once the call is over and let go of (Call.detach); the peer is kept for peer()
        self._call: Optional[Call] = call
        self._peer = ""
        self._headers = headers
        self._metadata: Optional[tuple[Metadatum, ...]] = None
        self._deadline = deadline
        self._code: Optional[grpc.StatusCode] = None
        self._details: Optional[str] = None
        self._trailing: Optional[Sequence[tuple[str, Any]]] = None
        self._aborted = False
        self._callbacks: list[Callable[[], Any]] = []
        self._lock = threading.Lock()
        self._done = False

    def _reset(self) -> None:
        """Forget what a previous run of the handler set (a grouped write
        that runs again after its group was rolled back)."""
        self._code = None
        self._details = None
        self._trailing = None
        self._aborted = False

    # -- request side
    def invocation_metadata(self) -> tuple[Metadatum, ...]:
        if self._metadata is None:
            self._metadata = _metadata_for(self._headers)
        return self._metadata

    def peer(self) -> str:
        call = self._call
        return call.conn.peer if call is not None else self._peer

    def peer_identities(self) -> None:
        return None

    def peer_identity_key(self) -> None:
        return None

    def auth_context(self) -> dict:
        return {}

    def time_remaining(self) -> Optional[float]:
        if self._deadline is None:
            return None
        return max(0.0, self._deadline - time.monotonic())

    def is_active(self) -> bool:
        return not self._done

    def cancel(self) -> None:
        call = self._call
        if call is not None:  # a call that is over has nothing left to cancel
            call.cancel_from_app()

    def add_callback(self, callback: Callable[[], Any]) -> bool:
        with self._lock:
            if self._done:
                return False
            self._callbacks.append(callback)
            return True

    def _terminate(self) -> None:
        """The call is over (finished, cancelled or timed out): run the callbacks once."""
        with self._lock:
            if self._done:
                return
            self._done = True
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            try:
                callback()
            except Exception as exc:  # noqa: BLE001 - a failing callback must not hurt the transport
                log.warning("call termination callback failed: %s", exc)

    # -- response side
    def set_compression(self, compression: Any) -> None:
        pass  # we never compress; the client accepts identity

    def disable_next_message_compression(self) -> None:
        pass

    def send_initial_metadata(self, initial_metadata: Sequence[tuple[str, Any]]) -> None:
        call = self._call
        if call is not None:  # once the call is over, headers are not sent (as Call's own check)
            call.send_initial_metadata(initial_metadata)

    def set_trailing_metadata(self, trailing_metadata: Sequence[tuple[str, Any]]) -> None:
        self._trailing = tuple(trailing_metadata)

    def trailing_metadata(self) -> Optional[Sequence[tuple[str, Any]]]:
        return self._trailing

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        if code is grpc.StatusCode.OK:
            log.error("abort() called with StatusCode.OK; returning UNKNOWN")
            code, details = grpc.StatusCode.UNKNOWN, ""
        self._code = code
        self._details = details
        self._aborted = True
        raise _Abort()

    def abort_with_status(self, status: grpc.Status) -> None:
        self.set_trailing_metadata(status.trailing_metadata or ())
        self.abort(status.code, status.details)

    def set_code(self, code: grpc.StatusCode) -> None:
        self._code = code

    def set_details(self, details: str) -> None:
        self._details = details

    def code(self) -> Optional[grpc.StatusCode]:
        return self._code

    def details(self) -> Optional[str]:
        return self._details

    def _status_after(self, exc: Optional[BaseException]) -> tuple[grpc.StatusCode, str]:
        """The status grpcio would send after the handler returned (exc None) or raised ``exc``."""
        if exc is None:
            return self._code or grpc.StatusCode.OK, self._details or ""
        if self._aborted:
            return self._code or grpc.StatusCode.UNKNOWN, self._details or ""
        return (self._code or grpc.StatusCode.UNKNOWN,
                self._details if self._details is not None else f"Exception calling application: {exc}")


# ---------------------------------------------------------------- calls
_END = object()
_CANCELLED = object()
#: request-stream bytes a handler takes before they are given back to the client
_RELEASE_BATCH = 64 << 10


class RequestIterator:
    """Client-streaming requests as the handler's iterator; fed from the loop thread."""

    def __init__(self, call: "Call") -> None:
        self._call = call
        self._queue: "queue.SimpleQueue[Any]" = queue.SimpleQueue()
        #: bytes taken by the handler and not yet given back to the client's window
        self._consumed = 0

    def put(self, item: Any) -> None:
        self._queue.put(item)

    def __iter__(self) -> "RequestIterator":
        return self

    def __next__(self) -> Any:
        item = self._queue.get()
        if item is _END:
            self._queue.put(_END)  # a second next() also ends
            raise StopIteration
        if item is _CANCELLED:
            self._queue.put(_CANCELLED)
            raise _Abort()
        # The message is the handler's now: its bytes go back to the client's
        # connection window (the queue is bounded by that window). One hand-off
        # to the loop per 64 KiB, or when the queue runs dry.
        self._consumed += len(item) + MESSAGE_PREFIX_LEN
        if self._consumed >= _RELEASE_BATCH or self._queue.empty():
            self._call.consumed(self._consumed)
            self._consumed = 0
        return self._call.deserialize(item)

    next = __next__


_NOT_RUN: tuple[Optional[bytes], grpc.StatusCode, str] = (None, grpc.StatusCode.CANCELLED, "Cancelled")


class Call:
    """One RPC on one HTTP/2 stream. Loop-thread methods are marked; the rest run in the pool."""

    def __init__(self, dispatcher: Any, conn: Any, stream: Any, method: str, handler: Any,
                 headers: list[tuple[bytes, bytes]], inline: bool, deadline: Optional[float]) -> None:
        self.dispatcher = dispatcher
        self.conn = conn
        self.stream = stream
        self.method = method
        self.handler = handler
        self.inline = inline
        self.context = Context(self, headers, deadline)
        self.reader = MessageReader(dispatcher.max_recv)
        self.request: Optional[bytes] = None
        self.request_count = 0
        self.requests: Optional[RequestIterator] = None
        self.finished = False
        self.headers_sent = False
        self.timer: Any = None
        #: holds one of the server's streaming slots (see _submit_streaming)
        self.stream_slot = False
        # producer-side flow control for streamed responses: bytes handed to the
        # loop and not yet written; guarded by ``cond`` (only streams need one)
        self.streaming = handler.request_streaming or handler.response_streaming
        self.cond = threading.Condition() if self.streaming else None
        self.unsent = 0
        if deadline is not None:
            self.timer = conn.loop.call_at(conn.loop.time() + (deadline - time.monotonic()), self._expire)
        if handler.request_streaming:
            self.requests = RequestIterator(self)
            self._submit_streaming(self._run_request_streaming)

    # -- loop thread: input from the connection
    def on_data(self, data: bytes) -> None:
        if self.finished:
            return
        try:
            messages = self.reader.feed(data)
        except RpcFailure as exc:
            self.fail(exc.code, exc.details)
            return
        for message in messages:
            if self.requests is not None:
                self.requests.put(message)
            else:
                self.request_count += 1
                self.request = message

    def on_end(self) -> None:
        if self.finished:
            return
        if self.reader.partial:
            self.fail(grpc.StatusCode.INTERNAL, "stream ended inside a message")
            return
        if self.requests is not None:
            self.requests.put(_END)
            return
        if self.request_count != 1:
            self.fail(grpc.StatusCode.UNIMPLEMENTED if self.request_count > 1 else grpc.StatusCode.INTERNAL,
                      f"expected exactly one request message for {self.method}, got {self.request_count}")
            return
        if self.handler.response_streaming:
            self._submit_streaming(self._run_response_streaming)
        elif self.inline:
            self._respond_unary(*self._unary())
        elif self.method in self.dispatcher.ready_answers and self._answered_at_once():
            pass
        elif self._alone():
            self._respond_unary(*self._unary())
            d = self.dispatcher
            d.last_inline_conn, d.last_inline_end = self.conn, self.conn.loop.time()
        elif self.dispatcher.groups is not None and self.method in self.dispatcher.groups.methods:
            d = self.dispatcher
            # Only overlap seen now renews the memory: a client that writes
            # one call at a time after a burst must not keep itself off the
            # loop thread by each of its calls landing in a group.
            if self._overlapping():
                d.last_concurrent = self.conn.loop.time()
            d.groups.add(self)
        else:
            self.to_pool()

    def _answered_at_once(self) -> bool:
        """Loop thread: send the method's ready answer (NativeServer.add_ready_answers),
        if it has one for this request. Anything unusual, including a request
        that does not parse, is left to the method itself in the pool.

        A client that does not read gets no ready answers, as it gets no
        pooled calls (H2Connection.admit_pooled): each answer is written out
        at once, so the transport pauses writing above its high-water mark
        and the calls after that wait their turn in the pool's queue. (Kept
        in the connection's buffer instead, 500 unread Lists of 1 MB grew the
        server to 958 MiB.)"""
        if self.conn.write_paused:
            return False
        try:
            answer = self.dispatcher.ready_answers[self.method](self.deserialize(self.request), self.context)
            if answer is None:
                return False
            data = self.serialize(answer)
        except Exception as exc:  # noqa: BLE001 - the pooled method gives the status
            log.debug("no ready answer for %s: %s", self.method, exc)
            return False
        self._respond_unary(data, grpc.StatusCode.OK, "")
        self.conn.flush()
        return True

    def to_pool(self) -> None:
        """Loop thread: run this unary call on a worker thread, when its connection has a turn."""
        if self.conn.admit_pooled(self):
            self.start_pooled()

    def start_pooled(self) -> None:
        """Loop thread: admitted (see H2Connection.admit_pooled); submit to the pool."""
        d = self.dispatcher
        if d.pooled_in_flight:
            d.last_concurrent = self.conn.loop.time()
        d.pooled_in_flight += 1
        if not self._submit(self._run_unary_in_pool):
            d.pooled_in_flight -= 1
            self.conn.pooled -= 1

    def run_grouped(self) -> tuple[Optional[bytes], grpc.StatusCode, str]:
        """Loop thread, inside an active write group (see write_groups.py):
        run the handler and return its answer for later. A BaseException
        escaping from here means the group must be rolled back; the call
        may then run again, so it starts from a clean context."""
        self.context._reset()
        return self._unary()

    def respond_grouped(self, outcome: tuple[Optional[bytes], grpc.StatusCode, str]) -> None:
        """Loop thread: the call's group committed; send its answer."""
        self._respond_unary(*outcome)

    def _alone(self) -> bool:
        """Whether this unary write may run on the loop thread.

        Handing a call to a worker thread and back costs about as much as a
        write's own work, and a lone writer gains nothing from the pool: its
        commit is shared with nobody. But a write on the loop holds up every
        other client for its commit, and writers that arrive together must
        reach the store together to share one. So a write runs here only when
        no call runs in the pool, no more input from its client waits behind
        it, and calls have not been seen to overlap lately. Overlap shows as
        a pooled call submitted while another runs, or as a write from
        another connection arriving right after one ran here (it waited
        through that commit)."""
        d = self.dispatcher
        now = self.conn.loop.time()
        if (d.last_inline_conn is not None and d.last_inline_conn is not self.conn
                and now - d.last_inline_end < d.concurrency_memory):
            d.last_concurrent = now
        return (not self._overlapping()
                and now - d.last_concurrent > d.concurrency_memory
                and self.method not in d.always_pooled)

    def _overlapping(self) -> bool:
        """Whether another call is under way or queued right now."""
        d = self.dispatcher
        return bool(d.pooled_in_flight or self.conn.more_input or (d.groups is not None and d.groups.pending()))

    def on_reset(self) -> None:
        """The client cancelled (RST_STREAM) or the connection went away."""
        if self.finished:
            return
        self.finished = True
        self._cancel_timer()
        self._ended()

    def _ended(self) -> None:
        """Loop thread, once the call is over (finished or reset): a handler still
        reading requests or writing answers is woken to see it, and its streaming
        slot is free for the next stream."""
        if self.requests is not None:
            self.requests.put(_CANCELLED)
        if self.stream_slot:
            self.dispatcher.release_stream_slot(self)
        self._wake_producer()
        self.context._terminate()

    def _wake_producer(self) -> None:
        if self.cond is not None:
            with self.cond:
                self.cond.notify_all()

    def _expire(self) -> None:
        self.timer = None
        if not self.finished:
            self.fail(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")
            self.conn.reset_stream(self.stream, frames.CANCEL)  # the client may still be sending
            self.conn.flush()

    def _cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    # -- either thread: running the handler
    def deserialize(self, raw: bytes) -> Any:
        deserializer = self.handler.request_deserializer
        if deserializer is None:
            return raw
        try:
            return deserializer(raw)
        except Exception as exc:  # noqa: BLE001 - becomes the call's status
            log.debug("cannot deserialize request for %s: %s", self.method, exc)
            raise RpcFailure(grpc.StatusCode.INTERNAL, "Exception deserializing request!") from None

    def serialize(self, response: Any) -> bytes:
        serializer = self.handler.response_serializer
        try:
            data = serializer(response) if serializer is not None else response
        except Exception as exc:  # noqa: BLE001
            log.error("cannot serialize the response of %s: %s", self.method, exc)
            raise RpcFailure(grpc.StatusCode.INTERNAL, "Exception serializing response!") from None
        if len(data) > self.dispatcher.max_send:
            raise RpcFailure(grpc.StatusCode.RESOURCE_EXHAUSTED,
                             f"Sent message larger than max ({len(data)} vs. {self.dispatcher.max_send})")
        return data

    def _unary(self) -> tuple[Optional[bytes], grpc.StatusCode, str]:
        """Run a unary-unary handler: (serialized response or None, code, details)."""
        ctx = self.context
        try:
            request = self.deserialize(self.request)  # type: ignore[arg-type]
            behavior = self.handler.unary_unary
            try:
                response = behavior(request, ctx)
            except RpcFailure:
                raise
            except Exception as exc:  # noqa: BLE001 - grpcio semantics: the status says what happened
                code, details = ctx._status_after(exc)
                if not ctx._aborted:
                    log.error("%s raised: %s", self.method, exc, exc_info=log.isEnabledFor(logging.DEBUG))
                return None, code, details
            code, details = ctx._status_after(None)
            return self.serialize(response), code, details
        except RpcFailure as exc:
            return None, exc.code, exc.details

    def _run_unary_in_pool(self) -> None:
        # a call reset or timed out while it waited for a thread never runs
        result = _NOT_RUN if self.finished else self._unary()
        self.conn.call_soon_threadsafe(self._pooled_done, *result)

    def _pooled_done(self, data: Optional[bytes], code: grpc.StatusCode, details: str) -> None:
        self.dispatcher.pooled_in_flight -= 1
        self._respond_unary(data, code, details)
        self.conn.pooled_done()

    def consumed(self, nbytes: int) -> None:
        """Pool thread: the handler took ``nbytes`` of streamed request; the client may send more."""
        self.conn.call_soon_threadsafe(self.conn.release, self.stream, nbytes)

    def _run_response_streaming(self) -> None:
        try:
            request = self.deserialize(self.request)  # type: ignore[arg-type]
        except RpcFailure as exc:
            self.conn.call_soon_threadsafe(self.fail, exc.code, exc.details)
            return
        self._drain(lambda: self.handler.unary_stream(request, self.context))

    def _run_request_streaming(self) -> None:
        assert self.requests is not None
        if self.handler.response_streaming:
            self._drain(lambda: self.handler.stream_stream(self.requests, self.context))
            return
        ctx = self.context
        try:
            response = self.handler.stream_unary(self.requests, ctx)
            code, details = ctx._status_after(None)
            result = (self.serialize(response), code, details)
        except RpcFailure as exc:
            result = (None, exc.code, exc.details)
        except Exception as exc:  # noqa: BLE001
            result = (None, *ctx._status_after(exc))
        self.conn.call_soon_threadsafe(self._respond_unary, *result)

    def _drain(self, start: Callable[[], Any]) -> None:
        """Pool thread: iterate a streaming handler, sending each message under flow control."""
        ctx = self.context
        iterator = None
        try:
            iterator = start()
            if iterator is not None:
                for response in iterator:
                    if not ctx.is_active():
                        break
                    data = self.serialize(response)
                    if not self._send_from_thread(data):
                        break
            code, details = ctx._status_after(None)
        except RpcFailure as exc:
            code, details = exc.code, exc.details
        except Exception as exc:  # noqa: BLE001
            code, details = ctx._status_after(exc)
            if not ctx._aborted and ctx.is_active():
                log.error("%s raised: %s", self.method, exc)
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:  # noqa: BLE001 - the generator's own cleanup failed; nothing to tell the client
                    pass
        self.conn.call_soon_threadsafe(self.finish, code, details)

    def _send_from_thread(self, data: bytes) -> bool:
        """Queue one message for the loop; wait while too much is unsent. False once the call is over."""
        limit = self.dispatcher.stream_high_water
        assert self.cond is not None
        with self.cond:
            while self.unsent > limit and not self.finished:
                self.cond.wait(1.0)
            if self.finished:
                return False
            self.unsent += len(data) + MESSAGE_PREFIX_LEN
        self.conn.call_soon_threadsafe(self.send_message, data)
        return True

    def _submit_streaming(self, fn: Callable[[], None]) -> None:
        """Loop thread: a streaming call holds a worker for its whole life, so
        it runs only while the server's shared cap has room (see limits.py)."""
        d = self.dispatcher
        if not d.acquire_stream_slot(self):
            self.fail(grpc.StatusCode.RESOURCE_EXHAUSTED,
                      f"too many streaming calls at once (the limit is {d.streaming_cap}); try again later, "
                      "or raise --workers or [grpc] max_streaming_calls")
            return

        def run() -> None:
            try:
                if not self.finished:  # reset before a thread was free: never starts
                    fn()
            finally:
                d.release_stream_slot(self)
        if not self._submit(run):
            d.release_stream_slot(self)

    def _submit(self, fn: Callable[[], None]) -> bool:
        try:
            self.dispatcher.executor.submit(fn)
        except RuntimeError:  # the pool is shut down: the server is stopping
            self.fail(grpc.StatusCode.UNAVAILABLE, "server is shutting down")
            return False
        return True

    # -- loop thread: output
    def _send_headers_once(self) -> None:
        if not self.headers_sent:
            self.headers_sent = True
            self.conn.send_headers(self.stream, RESPONSE_HEADERS, end_stream=False)

    def send_initial_metadata(self, metadata: Sequence[tuple[str, Any]]) -> None:
        block = RESPONSE_HEADERS + hpack.encode_headers(_metadata_fields(metadata))

        def send() -> None:
            if not self.headers_sent and not self.finished:
                self.headers_sent = True
                self.conn.send_headers(self.stream, block, end_stream=False)
        if self.conn.on_loop_thread():
            send()
        else:
            self.conn.call_soon_threadsafe(send)

    def send_message(self, data: bytes) -> None:
        """Loop thread: one response message (prefix + payload) onto the stream."""
        if self.finished:
            return
        self._send_headers_once()
        self.conn.send_data(self.stream, message_prefix(len(data)), data)

    def on_sent(self, nbytes: int) -> None:
        """Loop thread: the connection wrote ``nbytes`` of our DATA; wake a waiting producer."""
        if self.cond is None:
            return
        with self.cond:
            self.unsent -= nbytes
            self.cond.notify_all()

    def _respond_unary(self, data: Optional[bytes], code: grpc.StatusCode, details: str) -> None:
        if self.finished:
            return
        if data is not None:
            if not self.headers_sent and self.conn.can_send_now(self.stream, len(data) + MESSAGE_PREFIX_LEN):
                # the common case in one write: headers, the message, the status
                self.headers_sent = True
                self.finished = True
                self._cancel_timer()
                trailers = status_fields(code, details, self.context._trailing)
                self.conn.send_unary_response(self.stream, RESPONSE_HEADERS, message_prefix(len(data)) + data,
                                              trailers)
                self.context._terminate()
                self._detach()
                return
            self.send_message(data)
        self.finish(code, details)

    def _detach(self) -> None:
        """Loop thread, once a unary call's whole answer is out and its
        stream closed (so no longer in the connection's table): break the
        call's reference cycles (stream <-> call <-> context) so that its
        objects are freed at once instead of by the cyclic GC. With them, 7
        objects per call were left to the collector: 164 young collections
        (and a full one) per 20,000 Gets, 2.6-3.0 us of a 22 us Get on the
        loop thread (in-process replay of grpc-go's requests)."""
        context = self.context
        context._peer = self.conn.peer
        context._call = None
        self.stream.call = None

    def fail(self, code: grpc.StatusCode, details: str) -> None:
        self.finish(code, details)

    def finish(self, code: grpc.StatusCode, details: str) -> None:
        """Loop thread: end the call with this status (Trailers-Only if nothing was sent)."""
        if self.finished:
            return
        self.finished = True
        self._cancel_timer()
        trailers = status_fields(code, details, self.context._trailing)
        if self.headers_sent:
            self.conn.send_trailers(self.stream, trailers)
        else:
            self.headers_sent = True
            self.conn.send_headers(self.stream, RESPONSE_HEADERS + trailers, end_stream=True)
        self._ended()

    def cancel_from_app(self) -> None:
        def cancel() -> None:
            if not self.finished:
                self.finish(grpc.StatusCode.CANCELLED, "Cancelled")
        if self.conn.on_loop_thread():
            cancel()
        else:
            self.conn.call_soon_threadsafe(cancel)

