"""Every budget the HTTP/2 transport holds a client to, in one place.

A client on the socket may be hostile or broken; each of these bounds what
one connection can make the server hold (memory) or do (CPU on the loop
thread, worker threads). Where grpc-go (containerd's transport) or nghttp2
have a rule for the same attack, the comment says what they do and why we
chose the same or differ.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

#: room beside one largest message in the receive budget: its 5-byte prefix and a frame of the next
_MESSAGE_SLACK = 16 << 10


@dataclass(frozen=True)
class Limits:
    #: SETTINGS_MAX_CONCURRENT_STREAMS, advertised and enforced: a HEADERS
    #: opening one stream more gets RST_STREAM(REFUSED_STREAM), as grpc-go
    #: answers beyond its MaxConcurrentStreams (the client may retry it).
    #: containerd sets no limit (grpc-go then advertises none), so 100k idle
    #: streams cost it about 1 GiB; here each open stream costs ~2 KiB of
    #: Python objects, and 1000 of them bound what a SETTINGS change of the
    #: initial window must walk (20k streams froze the loop 4.6 s).
    max_concurrent_streams: int = 1000
    #: open streams over all connections. An idle stream costs about 2.7 KiB
    #: (100k of them over 100 connections: 340 MiB of RSS); at this total a
    #: new stream is refused (REFUSED_STREAM) on any connection holding
    #: ``light_client_streams`` or more, so many connections cannot add up
    #: past it while a client making a call or two still gets through. The
    #: total is then bounded by this plus that many per connection, and
    #: connections by the descriptor limit (RLIMIT_NOFILE).
    max_streams_total: int = 20000
    light_client_streams: int = 8
    #: request bytes one connection may have received and not yet consumed
    #: (partial messages, queued stream messages, unary requests whose call
    #: has not finished). This is our connection receive window: credit goes
    #: back to the client as calls consume their messages, not as bytes
    #: arrive, so a client that streams requests faster than the handler
    #: takes them (or holds 16 MiB partial messages open on many streams)
    #: waits instead of growing the server. Raised to the message size limit
    #: plus one frame when that is larger, so one largest message always fits.
    connection_buffer: int = 32 << 20
    #: bytes of answers queued in the transport for a client that does not
    #: read them: above this asyncio calls pause_writing and we stop reading
    #: that client (its requests would only queue more answers), and stream
    #: producers wait; below low water everything resumes.
    write_high_water: int = 1 << 20
    write_low_water: int = 256 << 10
    #: kernel send buffer (SO_SNDBUF) asked for each unix-socket connection;
    #: Linux doubles the figure for its bookkeeping and caps the request at
    #: net.core.wmem_max (0: keep the kernel's default). With the default
    #: (208 KiB) a List of 10,000 images (2.75 MB) leaves the server in a
    #: dozen pieces: the kernel wakes the writer only once the client has
    #: drained three quarters of the buffer, and the client waits for the
    #: event loop to come round each time. Measured with a client that does
    #: not decode: 5.6 ms per List against 3.2 ms from a Go server replaying
    #: the same bytes, and 1.9 ms of server CPU; asking 2 MiB: 2.2 against
    #: 2.35 ms, 0.9 ms of CPU. The kernel holds bytes only while the client
    #: has not read them, and they are bytes the transport would otherwise
    #: hold itself, so a client that never reads pins at most twice this in
    #: the kernel on top of ``write_high_water`` here. TCP connections keep
    #: the kernel's autotuning.
    send_buffer: int = 2 << 20
    #: unary calls of one connection running (or queued) in the worker pool at
    #: once; more wait in the connection, holding only their request. Bounds
    #: the answers one client can have built and unsent (a List of 3,000
    #: images is about a megabyte), and keeps one client from filling the
    #: pool's queue for everybody.
    max_pooled_per_connection: int = 32
    #: streaming calls (server, client or bidi streams: Watch, reflection,
    #: Subscribe...) that may hold a worker thread at once, over all
    #: connections; one more is answered RESOURCE_EXHAUSTED. 0: the number of
    #: workers minus ``reserved_workers``, so unary calls always find a thread.
    max_streaming_calls: int = 0
    reserved_workers: int = 8
    #: header blocks: the encoded block (HEADERS + CONTINUATIONs) and the
    #: decoded list (RFC 7541 sizes) may not exceed these. A HPACK string is
    #: checked by its encoded length before any Huffman decoding (pure Python,
    #: 0.5-1.3 us a byte: 50 ms for 64 KiB of text), so a header block costs
    #: at most that much decoding.
    #: grpc-go allows 16 MiB; grpc-core clients send at most 8 KiB of
    #: metadata by default, and containerd's clients send well under 1 KiB.
    max_header_block: int = 64 << 10
    max_header_list: int = 64 << 10
    #: CONTINUATION frames per header block. nghttp2 (since 1.61) allows 8;
    #: Go's http2 counts bytes only, so endless empty ones are caught here.
    max_continuations: int = 16
    #: Rate limits, as token buckets (burst, then per second), each ending
    #: the connection with GOAWAY(ENHANCE_YOUR_CALM) when the bucket is empty.
    #: PING: grpc-go's keepalive enforcement sends GOAWAY ENHANCE_YOUR_CALM
    #: "too_many_pings" after 2 pings within 5 minutes while it has sent no
    #: data; that would also end an honest client's keepalive with a short
    #: interval, so we allow a burst and a steady rate far above any
    #: keepalive and still bound the work and the acks. nghttp2 only bounds
    #: the acks it has queued (a flood while the client does not read);
    #: pause_writing does that here.
    ping_burst: int = 1000
    ping_rate: float = 100.0
    #: SETTINGS: each one is acked and may walk every open stream (initial
    #: window); neither anchor limits the rate (nghttp2 limits entries per
    #: frame), grpc-go throttles reading while acks queue. A rate keeps the
    #: walk bounded per second.
    settings_burst: int = 100
    settings_rate: float = 10.0
    #: RST_STREAM cancelling an open stream (rapid reset, CVE-2023-44487):
    #: nghttp2's default token bucket is 1000 then 33/s, then it ends the
    #: session; grpc-go bounds only the handlers running at once. We do both:
    #: a reset call never starts, and past the bucket the connection ends.
    #: Resets of streams already answered cost nothing and are not counted.
    rst_burst: int = 1000
    rst_rate: float = 33.0
    #: streams opened beyond max_concurrent_streams, which RFC 9113 5.1.2
    #: forbids: grpc-go and grpc-core clients queue calls rather than exceed
    #: it, so past a burst (a client that opened streams before our SETTINGS
    #: arrived) only a hostile one keeps going; each refusal still costs a
    #: header block decode.
    refused_burst: int = 1000
    refused_rate: float = 33.0
    #: frames that carry nothing (DATA without payload or END_STREAM, empty
    #: CONTINUATION): nghttp2 treats a run of them as a flood; any honest
    #: client sends few.
    empty_frame_burst: int = 100
    empty_frame_rate: float = 10.0
    #: accept() failing for want of descriptors (EMFILE/ENFILE): stop
    #: accepting for this long, and log it at most once per ``accept_log_seconds``.
    accept_retry_seconds: float = 0.5
    accept_log_seconds: float = 10.0
    #: listen(2) backlog of each socket
    listen_backlog: int = 1024

    def receive_budget(self, max_message: int) -> int:
        """The connection receive window: the budget, or one largest message when that is more."""
        return max(self.connection_buffer, max_message + _MESSAGE_SLACK)

    def streaming_cap(self, workers: int) -> int:
        return self.max_streaming_calls or max(1, workers - self.reserved_workers)


DEFAULT_LIMITS = Limits()


class TokenBucket:
    """``burst`` events at once, then ``rate`` a second; take() is False once empty."""

    __slots__ = ("tokens", "burst", "rate", "stamp")

    def __init__(self, burst: int, rate: float) -> None:
        self.tokens = float(burst)
        self.burst = float(burst)
        self.rate = rate
        self.stamp = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False
