"""One HTTP/2 server connection as an asyncio protocol (RFC 9113).

Everything here runs on the event loop thread. Handler threads reach the
connection only through ``call_soon_threadsafe``. Frames written during one
pass over the input (or one callback) are gathered and written with one
system call at its end, so a unary call's HEADERS, DATA and trailers leave
together.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import threading
from collections import deque
from typing import Any, Callable, Optional

from . import frames as f
from .frames import H2ConnectionError, StreamError
from .hpack import Decoder, HPACKError
from .limits import DEFAULT_LIMITS, Limits, TokenBucket

log = logging.getLogger("boltimages.server.h2")

#: what we advertise per stream: a client may push a 16 MiB request without
#: waiting for us. The connection window is the receive budget of limits.py:
#: what a connection may have sent and we have not consumed.
LOCAL_INITIAL_WINDOW = 16 << 20
#: top a receive window up to full once it has fallen to 1/DIVISOR of that
WINDOW_REFILL_DIVISOR = 2
#: once we have written a connection's last frame and half-closed it, how long
#: the client gets to read that and close its end before we close ours
LINGER_SECONDS = 1.0

_unpack_header = struct.Struct(">IBI").unpack_from  # see frames.parse_header; local for speed
_REQUEST_FRAMES = frozenset((f.DATA, f.HEADERS))
#: frame types that do nothing when empty unless they carry this flag: DATA
#: without END_STREAM, CONTINUATION without END_HEADERS (limits.empty_frame_*)
_EMPTY_FLOOD = {f.DATA: f.FLAG_END_STREAM, f.CONTINUATION: f.FLAG_END_HEADERS}


def ask_send_buffer(sock: socket.socket, size: int) -> None:
    """Ask the kernel for a send buffer of ``size`` (limits.send_buffer says
    why); never shrink one already larger. The kernel caps the request at
    net.core.wmem_max, silently, which is the operator's to raise."""
    try:
        if sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) < 2 * size:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)
    except OSError as exc:  # not a socket that has one: keep the default
        log.debug("cannot set the send buffer of %s: %s", sock, exc)


class Stream:
    """HTTP/2 state of one stream: windows, half-closed flags, DATA waiting for window."""

    __slots__ = ("id", "recv_window", "send_window", "remote_closed", "local_closed", "call",
                 "out", "out_len", "trailers", "held")

    def __init__(self, stream_id: int, send_window: int) -> None:
        self.id = stream_id
        self.recv_window = LOCAL_INITIAL_WINDOW
        self.send_window = send_window
        self.remote_closed = False
        self.local_closed = False
        self.call: Any = None
        self.out: deque[memoryview] = deque()
        self.out_len = 0
        self.trailers: Optional[bytes] = None
        #: request bytes received on this stream and not yet consumed (see H2Connection.release)
        self.held = 0


class H2Connection(asyncio.Protocol):
    """Server side of one client connection; ``dispatcher.new_call`` turns request headers into calls."""

    def __init__(self, dispatcher: Any, loop: asyncio.AbstractEventLoop, on_closed: Callable[["H2Connection"], None]) -> None:
        self.dispatcher = dispatcher
        self.loop = loop
        self._on_closed = on_closed
        self.transport: Optional[asyncio.Transport] = None
        self.peer = "unknown"
        self.inbuf = bytearray()
        self.preface_seen = False
        self.settings_seen = False
        self.closed = False
        self.wbuf: list[bytes] = []
        self.limits: Limits = getattr(dispatcher, "limits", DEFAULT_LIMITS)
        self.decoder = Decoder(max_header_list_size=self.limits.max_header_list)
        self.streams: dict[int, Stream] = {}
        self.last_stream_id = 0
        # peer settings that shape what we send
        self.peer_initial_window = f.DEFAULT_INITIAL_WINDOW_SIZE
        self.peer_max_frame = f.DEFAULT_MAX_FRAME_SIZE
        self.send_window = f.DEFAULT_INITIAL_WINDOW_SIZE
        #: connection receive window: ``recv_window`` is what the client may
        #: still send, ``credit`` what calls consumed and we have not granted
        #: back yet; the rest of ``recv_budget`` is held by streams
        self.recv_budget = max(self.limits.receive_budget(getattr(dispatcher, "max_recv", 0)),
                               f.DEFAULT_INITIAL_WINDOW_SIZE)
        self.recv_window = self.recv_budget
        self.credit = 0
        self._refill_at = self.recv_budget // WINDOW_REFILL_DIVISOR
        self._max_streams = self.limits.max_concurrent_streams
        #: asyncio asked us to stop writing (the client does not read): see pause_writing
        self.write_paused = False
        #: unary calls of this connection in the worker pool, and those waiting for a turn
        self.pooled = 0
        self.pool_waiting: deque[Any] = deque()
        self._buckets: dict[str, TokenBucket] = {}
        self._continuations = 0
        self.blocked: dict[int, Stream] = {}  # streams with data waiting for the connection window
        self.continuation: Optional[tuple[int, int, bytearray]] = None  # (stream, HEADERS flags, block)
        #: the HEADERS that began ``continuation`` made its stream depend on itself
        self._self_dependent = False
        self.goaway_sent = False
        self.linger: Optional[asyncio.TimerHandle] = None
        self.lost = False
        # while a frame is handled: the input buffer and where the rest of
        # it starts and ends (see more_input)
        self._rest: tuple[bytes | bytearray, int, int] = (b"", 0, 0)
        self.thread_id = threading.get_ident()

    # ------------------------------------------------------------ asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.thread_id = threading.get_ident()
        sock = transport.get_extra_info("socket")
        peername = transport.get_extra_info("peername")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            host, port = peername[0], peername[1]
            self.peer = f"ipv4:{host}:{port}" if sock.family == socket.AF_INET else f"ipv6:[{host}]:{port}"
        else:
            self.peer = "unix:" + (transport.get_extra_info("sockname") or "")
            if sock is not None and self.limits.send_buffer:
                ask_send_buffer(sock, self.limits.send_buffer)
        limits = self.limits
        self.transport.set_write_buffer_limits(limits.write_high_water, limits.write_low_water)  # type: ignore[union-attr]
        self.wbuf.append(f.settings({
            f.SETTINGS_ENABLE_PUSH: 0,
            f.SETTINGS_MAX_CONCURRENT_STREAMS: limits.max_concurrent_streams,
            f.SETTINGS_INITIAL_WINDOW_SIZE: LOCAL_INITIAL_WINDOW,
            f.SETTINGS_MAX_HEADER_LIST_SIZE: limits.max_header_list,
        }))
        if self.recv_budget > f.DEFAULT_INITIAL_WINDOW_SIZE:
            self.wbuf.append(f.window_update(0, self.recv_budget - f.DEFAULT_INITIAL_WINDOW_SIZE))
        self.flush()

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        try:
            if self.inbuf:
                self.inbuf += data
                del self.inbuf[:self._process(self.inbuf)]
            else:
                # the usual case: whole frames in one read, parsed from ``data`` without a copy
                used = self._process(data)
                if used < len(data):
                    self.inbuf += data[used:]
        except H2ConnectionError as exc:
            self.fail(exc.code, str(exc))
        except HPACKError as exc:
            self.fail(f.COMPRESSION_ERROR, str(exc))
        except Exception as exc:  # noqa: BLE001 - a bug of ours must not leave the client hanging
            log.error("h2 connection from %s failed: %s", self.peer, exc, exc_info=log.isEnabledFor(logging.DEBUG))
            self.fail(f.INTERNAL_ERROR, "internal error")
        self.flush()

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self.closed = True
        self.lost = True
        if self.linger is not None:
            self.linger.cancel()
            self.linger = None
        streams, self.streams = self.streams, {}
        self.dispatcher.open_streams -= len(streams)
        self.blocked.clear()
        for stream in streams.values():
            if stream.call is not None:
                stream.call.on_reset()
        self._on_closed(self)

    def eof_received(self) -> bool:
        return False  # close our side too

    def pause_writing(self) -> None:
        """The transport holds more than limits.write_high_water unwritten: the
        client is not reading. Stop reading its requests (each would only add
        answers; PINGs and SETTINGS would add acks) and hold stream DATA back,
        so its streaming producers wait (grpc-go likewise stops reading while
        its control frames queue)."""
        self.write_paused = True
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()
        blocked, self.blocked = self.blocked, {}
        for stream in blocked.values():
            self._flush_stream(stream)
        self._start_waiting_calls()
        self.flush()

    # ------------------------------------------------------------ writing
    def flush(self) -> None:
        if self.wbuf and not self.closed and self.transport is not None:
            data = b"".join(self.wbuf) if len(self.wbuf) > 1 else self.wbuf[0]
            self.wbuf.clear()
            self.transport.write(data)
        else:
            self.wbuf.clear()

    def call_soon_threadsafe(self, fn: Callable[..., Any], *args: Any) -> None:
        """From a handler thread: run ``fn`` on the loop, then write what it produced."""
        try:
            self.loop.call_soon_threadsafe(self._run_and_flush, fn, args)
        except RuntimeError:
            pass  # the loop is closed: the server has stopped and the call is gone with it

    def _run_and_flush(self, fn: Callable[..., Any], args: tuple) -> None:
        try:
            fn(*args)
        except Exception as exc:  # noqa: BLE001
            log.error("h2 callback failed: %s", exc, exc_info=log.isEnabledFor(logging.DEBUG))
        self.flush()

    def on_loop_thread(self) -> bool:
        return threading.get_ident() == self.thread_id

    def fail(self, code: int, message: str) -> None:
        """Connection error: GOAWAY with ``code`` and close."""
        if self.closed:
            return
        log.debug("h2 connection error %d from %s: %s", code, self.peer, message)
        self.wbuf.append(f.goaway(self.last_stream_id, code, message.encode("utf-8", "replace")[:256]))
        self.flush()
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def _header_frames(self, stream_id: int, block: bytes, end_stream: bool) -> None:
        limit = self.peer_max_frame
        flags = f.FLAG_END_STREAM if end_stream else 0
        if len(block) <= limit:
            self.wbuf.append(f.frame(f.HEADERS, flags | f.FLAG_END_HEADERS, stream_id, block))
            return
        self.wbuf.append(f.frame(f.HEADERS, flags, stream_id, block[:limit]))
        for start in range(limit, len(block), limit):
            last = start + limit >= len(block)
            self.wbuf.append(f.frame(f.CONTINUATION, f.FLAG_END_HEADERS if last else 0, stream_id,
                                     block[start:start + limit]))

    def send_headers(self, stream: Stream, block: bytes, end_stream: bool) -> None:
        if stream.local_closed or self.closed:
            return
        self._header_frames(stream.id, block, end_stream)
        if end_stream:
            self._local_close(stream)

    def send_data(self, stream: Stream, *chunks: bytes) -> None:
        if stream.local_closed or self.closed:
            return
        for chunk in chunks:
            if chunk:
                stream.out.append(memoryview(chunk))
                stream.out_len += len(chunk)
        self._flush_stream(stream)

    def send_trailers(self, stream: Stream, block: bytes) -> None:
        if stream.local_closed or self.closed:
            return
        stream.trailers = block
        self._flush_stream(stream)

    def can_send_now(self, stream: Stream, nbytes: int) -> bool:
        return (not stream.out and nbytes <= self.peer_max_frame
                and nbytes <= stream.send_window and nbytes <= self.send_window)

    def send_unary_response(self, stream: Stream, headers: bytes, payload: bytes, trailers: bytes) -> None:
        """Headers, one DATA frame and trailers; the caller checked can_send_now()."""
        if stream.local_closed or self.closed:
            return
        sid = stream.id
        n = len(payload)
        limit = self.peer_max_frame
        if len(headers) <= limit and len(trailers) <= limit:
            # the usual case (a Get's answer is a few hundred bytes): no frame
            # split, so three frame headers and no concatenation per frame
            header = f.frame_header
            self.wbuf += (header(len(headers), f.HEADERS, f.FLAG_END_HEADERS, sid), headers,
                          header(n, f.DATA, 0, sid), payload,
                          header(len(trailers), f.HEADERS, f.FLAG_END_HEADERS | f.FLAG_END_STREAM, sid), trailers)
        else:
            self._header_frames(sid, headers, False)
            self.wbuf.append(f.frame(f.DATA, 0, sid, payload))
            self._header_frames(sid, trailers, True)
        stream.send_window -= n
        self.send_window -= n
        self._local_close(stream)

    def _flush_stream(self, stream: Stream) -> None:
        sent = 0
        out = stream.out
        while out:
            room = min(stream.send_window, self.send_window, self.peer_max_frame)
            if self.write_paused:
                self.blocked[stream.id] = stream
                break
            if room <= 0:
                if self.send_window <= 0:
                    self.blocked[stream.id] = stream
                break
            head = out[0]
            if len(head) <= room:
                out.popleft()
                piece = head
            else:
                piece = head[:room]
                out[0] = head[room:]
            n = len(piece)
            self.wbuf.append(f.frame_header(n, f.DATA, 0, stream.id))
            self.wbuf.append(piece)  # type: ignore[arg-type] - join() accepts memoryviews
            stream.send_window -= n
            self.send_window -= n
            stream.out_len -= n
            sent += n
        if sent and stream.call is not None:
            stream.call.on_sent(sent)
        if not out and stream.trailers is not None:
            block, stream.trailers = stream.trailers, None
            self._header_frames(stream.id, block, True)
            self._local_close(stream)

    def _local_close(self, stream: Stream) -> None:
        stream.local_closed = True
        if not stream.remote_closed:
            # the answer is complete; the client need not send the rest of its request
            self.wbuf.append(f.rst_stream(stream.id, f.NO_ERROR))
        self._forget(stream.id)
        if self.goaway_sent and not self.streams:
            self.loop.call_soon(self._close_idle)

    def _forget(self, sid: int) -> Optional[Stream]:
        """Take stream ``sid`` out of the connection, with what it counted for: the
        server's open streams, the request bytes it held of the receive budget, and a
        wait for window. None when it was not open."""
        stream = self.streams.pop(sid, None)
        if stream is not None:
            self.dispatcher.open_streams -= 1
            if stream.held:
                self.release(stream, stream.held)
            self.blocked.pop(sid, None)
        return stream

    def release(self, stream: Stream, nbytes: int) -> None:
        """Loop thread: ``nbytes`` of the stream's request were consumed (or
        dropped); give them back to the client's connection window once half
        of it is used up."""
        nbytes = min(nbytes, stream.held)
        stream.held -= nbytes
        self.credit += nbytes
        self._grant()

    def _grant(self) -> None:
        if self.credit and self.recv_window <= self._refill_at and not self.closed:
            self.wbuf.append(f.window_update(0, self.credit))
            self.recv_window += self.credit
            self.credit = 0

    def reset_stream(self, stream: Stream, code: int) -> None:
        if self._forget(stream.id) is None:
            return
        stream.local_closed = True
        self.wbuf.append(f.rst_stream(stream.id, code))
        if stream.call is not None:
            stream.call.on_reset()
        if self.goaway_sent and not self.streams:
            self.loop.call_soon(self._close_idle)

    def _calm(self, rule: str) -> None:
        """One more frame of a rate-limited kind (limits.py): past its bucket,
        GOAWAY(ENHANCE_YOUR_CALM) ends the connection."""
        bucket = self._buckets.get(rule)
        if bucket is None:
            limits = self.limits
            bucket = self._buckets[rule] = TokenBucket(getattr(limits, rule + "_burst"),
                                                       getattr(limits, rule + "_rate"))
        if not bucket.take():
            log.info("h2 client %s exceeded the %s rate; connection closed", self.peer, rule)
            raise H2ConnectionError(f.ENHANCE_YOUR_CALM, f"too many {rule.replace('_', ' ')} frames")

    # ------------------------------------------------------------ worker pool admission
    def admit_pooled(self, call: Any) -> bool:
        """Loop thread: may ``call`` start in the pool now? Otherwise it waits
        its turn here. A connection runs at most limits.max_pooled_per_connection
        unary calls at once, and none while the client does not read: their
        answers (a List may be megabytes) would only pile up in memory."""
        if self.pooled < self.limits.max_pooled_per_connection and not self.write_paused:
            self.pooled += 1
            return True
        self.pool_waiting.append(call)
        return False

    def pooled_done(self) -> None:
        self.pooled -= 1
        if self.pool_waiting:
            self._start_waiting_calls()

    def _start_waiting_calls(self) -> None:
        waiting = self.pool_waiting
        while waiting and not self.write_paused and self.pooled < self.limits.max_pooled_per_connection:
            call = waiting.popleft()
            if not call.finished:  # a call reset while it waited never starts
                self.pooled += 1
                call.start_pooled()

    # ------------------------------------------------------------ shutdown
    def begin_shutdown(self) -> None:
        """GOAWAY: no new streams; close once the ones in flight are done."""
        if self.closed or self.goaway_sent:
            return
        self.goaway_sent = True
        self.wbuf.append(f.goaway(self.last_stream_id, f.NO_ERROR))
        self.flush()
        if not self.streams:
            self._close_idle()

    def _close_idle(self) -> None:
        if not self.streams and not self.closed and self.transport is not None:
            self.flush()
            self.end_writing()

    def end_writing(self) -> None:
        """Our last frame is written: half-close, and let the client close the connection.

        Closing the socket outright would race the client: whatever it writes
        meanwhile (a WINDOW_UPDATE, a PING, a request that crossed our GOAWAY)
        then fails with EPIPE or meets a reset, and grpc-core fails every call
        on that connection as UNAVAILABLE "Stream removed", even one whose
        trailers are already in its receive buffer, unread. After
        shutdown(SHUT_WR) the client reads all we sent, then EOF, and closes;
        we discard what it still sends and close on its EOF (eof_received),
        or after LINGER_SECONDS if it never does.
        """
        self.flush()
        self.closed = True
        transport = self.transport
        if transport is None or self.lost or transport.is_closing():
            return
        if not transport.can_write_eof():
            transport.close()
            return
        transport.write_eof()
        if self.linger is None:
            self.linger = self.loop.call_later(LINGER_SECONDS, self.hard_close)

    def hard_close(self, drop_unsent: bool = False) -> None:
        """Close now, whatever the client is doing (linger over, or the server is stopping).

        ``close()`` still writes what the transport holds, which never ends
        for a client that stopped reading; ``drop_unsent`` discards it.
        """
        if self.linger is not None:
            self.linger.cancel()
            self.linger = None
        self.closed = True
        if self.transport is not None and not self.lost:
            if drop_unsent:
                self.transport.abort()
            else:
                self.transport.close()

    def abort_all(self) -> None:
        """Grace period over: cancel what is still running and end the connection."""
        for stream in list(self.streams.values()):
            self.reset_stream(stream, f.CANCEL)
        # the RST_STREAMs reach the client like any last frame: half-close, not close
        self.end_writing()

    # ------------------------------------------------------------ reading
    def _process(self, buf: bytes | bytearray) -> int:
        """Handle every whole frame in ``buf``; returns how many bytes were used."""
        pos = 0
        if not self.preface_seen:
            n = len(f.CLIENT_PREFACE)
            if len(buf) < n:
                if not f.CLIENT_PREFACE.startswith(bytes(buf)):
                    raise H2ConnectionError(f.PROTOCOL_ERROR, "connection does not start with the HTTP/2 preface")
                return 0
            if bytes(buf[:n]) != f.CLIENT_PREFACE:
                raise H2ConnectionError(f.PROTOCOL_ERROR, "connection does not start with the HTTP/2 preface")
            self.preface_seen = True
            pos = n
        end = len(buf)
        copy = isinstance(buf, bytearray)
        handlers = self._HANDLERS
        unpack = _unpack_header
        header_len = f.FRAME_HEADER_LEN
        while end - pos >= header_len:
            word, flags, sid = unpack(buf, pos)
            length = word >> 8
            ftype = word & 0xFF
            sid &= f.STREAM_ID_MASK
            if length > f.DEFAULT_MAX_FRAME_SIZE:
                raise H2ConnectionError(f.FRAME_SIZE_ERROR, f"frame of {length} bytes exceeds our maximum "
                                                           f"{f.DEFAULT_MAX_FRAME_SIZE}")
            start = pos + header_len
            if end - start < length:
                break
            payload = bytes(buf[start:start + length]) if copy else buf[start:start + length]
            pos = start + length
            self._rest = (buf, pos, end)
            if not self.settings_seen:
                if ftype != f.SETTINGS or flags & f.FLAG_ACK:
                    raise H2ConnectionError(f.PROTOCOL_ERROR, "first frame is not SETTINGS")
                self.settings_seen = True
            if self.continuation is not None and (ftype != f.CONTINUATION or sid != self.continuation[0]):
                raise H2ConnectionError(f.PROTOCOL_ERROR, "header block interrupted by another frame")
            if not length and ftype in _EMPTY_FLOOD and not flags & _EMPTY_FLOOD[ftype]:
                self._calm("empty_frame")
            handler = handlers.get(ftype)
            if handler is None:
                continue  # unknown frame types are ignored (RFC 9113 4.1)
            try:
                handler(self, flags, sid, payload)  # type: ignore[arg-type]
            except StreamError as exc:
                stream = self.streams.get(exc.stream_id)
                if stream is not None:
                    self.reset_stream(stream, exc.code)
                else:
                    self.wbuf.append(f.rst_stream(exc.stream_id, exc.code))
            if self.closed:
                break
        self._rest = (b"", 0, 0)
        return pos

    @property
    def more_input(self) -> bool:
        """Whether a request frame of this client waits behind the frame
        being handled: a new call (HEADERS) or more of one (DATA). Control
        frames do not count: clients send PINGs and WINDOW_UPDATEs along
        with a request, and they carry no call that could share its commit.
        A frame whose header has not fully arrived counts: it may be one."""
        buf, pos, end = self._rest
        header_len = f.FRAME_HEADER_LEN
        while pos < end:
            if end - pos < header_len:
                return True
            word = _unpack_header(buf, pos)[0]
            if word & 0xFF in _REQUEST_FRAMES:
                return True
            pos += header_len + (word >> 8)
        return False

    def _on_data(self, flags: int, sid: int, payload: bytes) -> None:
        if sid == 0:
            raise H2ConnectionError(f.PROTOCOL_ERROR, "DATA on stream 0")
        n = len(payload)
        if n > self.recv_window:
            raise H2ConnectionError(f.FLOW_CONTROL_ERROR, "DATA beyond the connection window")
        self.recv_window -= n
        data = f.strip_padding(payload, flags, "DATA")
        stream = self.streams.get(sid)
        if stream is None:
            if sid > self.last_stream_id:
                raise H2ConnectionError(f.PROTOCOL_ERROR, f"DATA on idle stream {sid}")
            # a stream we already finished or reset: what was in flight is dropped, its window given back
            self.credit += n
            self._grant()
            return
        # held until the call consumes it (see release); padding too, until the stream ends
        stream.held += n
        if self.recv_window <= self._refill_at:
            self._grant()
        if stream.remote_closed:
            raise StreamError(sid, f.STREAM_CLOSED, "DATA after END_STREAM")
        if n > stream.recv_window:
            raise StreamError(sid, f.FLOW_CONTROL_ERROR, "DATA beyond the stream window")
        stream.recv_window -= n
        end_stream = flags & f.FLAG_END_STREAM
        if not end_stream and stream.recv_window <= LOCAL_INITIAL_WINDOW // WINDOW_REFILL_DIVISOR:
            self.wbuf.append(f.window_update(sid, LOCAL_INITIAL_WINDOW - stream.recv_window))
            stream.recv_window = LOCAL_INITIAL_WINDOW
        call = stream.call
        if data:
            call.on_data(data)
        if end_stream:
            stream.remote_closed = True
            call.on_end()

    def _on_headers(self, flags: int, sid: int, payload: bytes) -> None:
        if sid == 0:
            raise H2ConnectionError(f.PROTOCOL_ERROR, "HEADERS on stream 0")
        block = f.strip_padding(payload, flags, "HEADERS")
        if flags & f.FLAG_PRIORITY:
            if len(block) < f.PRIORITY_LEN:
                raise H2ConnectionError(f.FRAME_SIZE_ERROR, "HEADERS too short for its priority fields")
            # a stream depending on itself is a stream error (RFC 9113 5.3.1), but
            # the block is still decoded: the dynamic table must stay in step (4.3)
            if f.read_u32(block) & f.STREAM_ID_MASK == sid:
                self._self_dependent = True
            block = block[f.PRIORITY_LEN:]
        if not flags & f.FLAG_END_HEADERS:
            self.continuation = (sid, flags, bytearray(block))
            self._continuations = 0
            return
        self._header_block(sid, flags, block)

    def _on_continuation(self, flags: int, sid: int, payload: bytes) -> None:
        if self.continuation is None:
            raise H2ConnectionError(f.PROTOCOL_ERROR, "CONTINUATION without a header block in progress")
        _, first_flags, block = self.continuation
        block += payload
        limits = self.limits
        if len(block) > limits.max_header_block:
            raise H2ConnectionError(f.ENHANCE_YOUR_CALM, f"header block larger than {limits.max_header_block} bytes")
        self._continuations += 1
        if self._continuations > limits.max_continuations:
            raise H2ConnectionError(f.ENHANCE_YOUR_CALM,
                                    f"header block in more than {limits.max_continuations} CONTINUATION frames")
        if flags & f.FLAG_END_HEADERS:
            self.continuation = None
            self._header_block(sid, first_flags, bytes(block))

    def _header_block(self, sid: int, flags: int, block: bytes) -> None:
        # decode first, always: the dynamic table must stay in step with the peer's
        headers = self.decoder.decode(block)
        if self.decoder.malformed is not None or self._self_dependent:
            self._malformed(sid)
        end_stream = bool(flags & f.FLAG_END_STREAM)
        stream = self.streams.get(sid)
        if stream is not None:  # trailers from the client
            if stream.remote_closed:
                raise StreamError(sid, f.STREAM_CLOSED, "HEADERS after END_STREAM")
            if not end_stream:
                raise StreamError(sid, f.PROTOCOL_ERROR, "trailing HEADERS without END_STREAM")
            stream.remote_closed = True
            stream.call.on_end()
            return
        if sid % 2 == 0:
            raise H2ConnectionError(f.PROTOCOL_ERROR, f"client opened even stream {sid}")
        if sid <= self.last_stream_id:
            raise H2ConnectionError(f.STREAM_CLOSED, f"HEADERS on closed stream {sid}")
        self.last_stream_id = sid
        d = self.dispatcher
        if self.goaway_sent or len(self.streams) >= self._max_streams or (
                d.open_streams >= d.stream_budget and len(self.streams) >= self.limits.light_client_streams):
            # beyond SETTINGS_MAX_CONCURRENT_STREAMS (or this connection's share
            # of the server's budget): refused, as grpc-go does; the request
            # was not processed, so the client may retry it
            if not self.goaway_sent and len(self.streams) >= self._max_streams:
                self._calm("refused")
            self.wbuf.append(f.rst_stream(sid, f.REFUSED_STREAM))
            return
        stream = Stream(sid, self.peer_initial_window)
        stream.remote_closed = end_stream
        self.streams[sid] = stream
        d.open_streams += 1
        stream.call = self.dispatcher.new_call(self, stream, headers)
        if end_stream and sid in self.streams:
            stream.call.on_end()

    def _malformed(self, sid: int) -> None:
        """The block just decoded is a malformed request (RFC 9113 8.1.1): a
        stream error of type PROTOCOL_ERROR; the stream counts as opened."""
        reason = "stream depends on itself" if self._self_dependent else self.decoder.malformed
        self._self_dependent = False
        if sid not in self.streams and sid % 2 and sid > self.last_stream_id:
            self.last_stream_id = sid
        raise StreamError(sid, f.PROTOCOL_ERROR, reason or "malformed request")

    def _on_priority(self, flags: int, sid: int, payload: bytes) -> None:
        if sid == 0:
            raise H2ConnectionError(f.PROTOCOL_ERROR, "PRIORITY on stream 0")
        if len(payload) != f.PRIORITY_LEN:
            raise StreamError(sid, f.FRAME_SIZE_ERROR, "PRIORITY frame of the wrong size")

    def _on_rst_stream(self, flags: int, sid: int, payload: bytes) -> None:
        if sid == 0:
            raise H2ConnectionError(f.PROTOCOL_ERROR, "RST_STREAM on stream 0")
        if len(payload) != f.RST_STREAM_LEN:
            raise H2ConnectionError(f.FRAME_SIZE_ERROR, "RST_STREAM frame of the wrong size")
        if sid > self.last_stream_id:
            raise H2ConnectionError(f.PROTOCOL_ERROR, f"RST_STREAM on idle stream {sid}")
        stream = self._forget(sid)
        if stream is not None:
            # only cancellations of open streams count: a reset of a stream
            # that is already over costs nothing, and clients send those
            self._calm("rst")
            stream.local_closed = stream.remote_closed = True
            stream.call.on_reset()
            if self.goaway_sent and not self.streams:
                self.loop.call_soon(self._close_idle)

    def _on_settings(self, flags: int, sid: int, payload: bytes) -> None:
        if sid != 0:
            raise H2ConnectionError(f.PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & f.FLAG_ACK:
            if payload:
                raise H2ConnectionError(f.FRAME_SIZE_ERROR, "SETTINGS ack with a payload")
            return
        self._calm("settings")
        grew = False
        for ident, value in f.parse_settings(payload):
            if ident == f.SETTINGS_ENABLE_PUSH:
                if value > 1:
                    raise H2ConnectionError(f.PROTOCOL_ERROR, f"SETTINGS_ENABLE_PUSH {value}")
            elif ident == f.SETTINGS_INITIAL_WINDOW_SIZE:
                if value > f.MAX_WINDOW_SIZE:
                    raise H2ConnectionError(f.FLOW_CONTROL_ERROR, f"SETTINGS_INITIAL_WINDOW_SIZE {value}")
                delta = value - self.peer_initial_window
                self.peer_initial_window = value
                for stream in self.streams.values():
                    stream.send_window += delta
                    if stream.send_window > f.MAX_WINDOW_SIZE:
                        raise H2ConnectionError(f.FLOW_CONTROL_ERROR, "stream window overflow")
                grew = grew or delta > 0
            elif ident == f.SETTINGS_MAX_FRAME_SIZE:
                if not f.DEFAULT_MAX_FRAME_SIZE <= value <= f.MAX_MAX_FRAME_SIZE:
                    raise H2ConnectionError(f.PROTOCOL_ERROR, f"SETTINGS_MAX_FRAME_SIZE {value}")
                self.peer_max_frame = value
            # header table size: our encoder never indexes, so any size suits us;
            # others (max concurrent streams, header list size) only limit what we never do
        self.wbuf.append(f.SETTINGS_ACK)
        if grew:
            for stream in list(self.streams.values()):
                if stream.out or stream.trailers is not None:
                    self._flush_stream(stream)

    def _on_push_promise(self, flags: int, sid: int, payload: bytes) -> None:
        raise H2ConnectionError(f.PROTOCOL_ERROR, "clients must not send PUSH_PROMISE")

    def _on_ping(self, flags: int, sid: int, payload: bytes) -> None:
        if sid != 0:
            raise H2ConnectionError(f.PROTOCOL_ERROR, "PING on a stream")
        if len(payload) != f.PING_LEN:
            raise H2ConnectionError(f.FRAME_SIZE_ERROR, "PING frame of the wrong size")
        if not flags & f.FLAG_ACK:
            self._calm("ping")
            self.wbuf.append(f.ping_ack(payload))

    def _on_goaway(self, flags: int, sid: int, payload: bytes) -> None:
        if sid != 0:
            raise H2ConnectionError(f.PROTOCOL_ERROR, "GOAWAY on a stream")
        if len(payload) < f.GOAWAY_MIN_LEN:
            raise H2ConnectionError(f.FRAME_SIZE_ERROR, "GOAWAY frame too short")
        # the client opens no more streams; ours finish, then we close
        self.goaway_sent = True
        if not self.streams:
            self._close_idle()

    def _on_window_update(self, flags: int, sid: int, payload: bytes) -> None:
        if len(payload) != f.WINDOW_UPDATE_LEN:
            raise H2ConnectionError(f.FRAME_SIZE_ERROR, "WINDOW_UPDATE frame of the wrong size")
        increment = f.read_u32(payload) & f.STREAM_ID_MASK
        if sid == 0:
            if increment == 0:
                raise H2ConnectionError(f.PROTOCOL_ERROR, "WINDOW_UPDATE of 0 on the connection")
            self.send_window += increment
            if self.send_window > f.MAX_WINDOW_SIZE:
                raise H2ConnectionError(f.FLOW_CONTROL_ERROR, "connection window overflow")
            if self.blocked:  # (clients top the window up with every call: no new dict for nothing)
                blocked, self.blocked = self.blocked, {}
                for stream in blocked.values():
                    self._flush_stream(stream)
            return
        stream = self.streams.get(sid)
        if stream is None:
            if sid > self.last_stream_id:
                raise H2ConnectionError(f.PROTOCOL_ERROR, f"WINDOW_UPDATE on idle stream {sid}")
            return
        if increment == 0:
            raise StreamError(sid, f.PROTOCOL_ERROR, "WINDOW_UPDATE of 0")
        stream.send_window += increment
        if stream.send_window > f.MAX_WINDOW_SIZE:
            raise StreamError(sid, f.FLOW_CONTROL_ERROR, "stream window overflow")
        if stream.out or stream.trailers is not None:
            self._flush_stream(stream)

    _HANDLERS: dict[int, Callable[["H2Connection", int, int, bytes], None]] = {
        f.DATA: _on_data, f.HEADERS: _on_headers, f.PRIORITY: _on_priority, f.RST_STREAM: _on_rst_stream,
        f.SETTINGS: _on_settings, f.PUSH_PROMISE: _on_push_promise, f.PING: _on_ping, f.GOAWAY: _on_goaway,
        f.WINDOW_UPDATE: _on_window_update, f.CONTINUATION: _on_continuation,
    }
