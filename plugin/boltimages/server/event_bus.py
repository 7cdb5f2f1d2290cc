"""In-process event exchange, the counterpart of containerd's events exchange.

Publishers (our servicers, or clients through Events/Publish and Forward) hand
in an event; every subscriber whose filters match receives a copy of the
containerd envelope (timestamp, namespace, topic, event as Any). Delivery is
best effort, as in containerd: a subscriber that stops reading is dropped
after its queue fills rather than stalling the publisher (an image write must
never wait on a slow ``ctr events``).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Callable, Iterator, Optional

from google.protobuf import any_pb2, message as pb_message, timestamp_pb2

from ..api.containerd.services.events.v1 import events_pb2
from ..errors import InvalidArgument, go_quote
from ..store.validation import validate_identifier

log = logging.getLogger("boltimages.events")

Matcher = Callable[[events_pb2.Envelope], bool]

#: envelopes buffered per subscriber before it counts as stuck and is dropped
SUBSCRIBER_QUEUE = 4096
#: namespaces and topics remembered as valid, so a publish checks each once
_VALID_CACHE_MAX = 1024
_CLOSED = object()


def pack_event(event: pb_message.Message | any_pb2.Any) -> any_pb2.Any:
    """Wrap an event like containerd's typeurl does: the type URL is the bare full name.

    ctr resolves ``containerd.events.ImageCreate`` through its type registry;
    the "type.googleapis.com/" prefix protobuf's Any.Pack adds would not resolve.
    """
    if isinstance(event, any_pb2.Any):
        return event
    return any_pb2.Any(type_url=event.DESCRIPTOR.full_name, value=event.SerializeToString())


def validate_topic(topic: str) -> None:
    """containerd's topic rule: "/" then identifier components joined by "/"."""
    try:
        if not topic:
            raise InvalidArgument("must not be empty")
        if topic[0] != "/":
            raise InvalidArgument("must start with '/'")
        if len(topic) == 1:
            raise InvalidArgument("must have at least one component")
        for component in topic[1:].split("/"):
            try:
                validate_identifier(component)
            except InvalidArgument as exc:
                raise exc.wrap(f"failed validation on component {go_quote(component)}") from None
    except InvalidArgument as exc:
        raise exc.wrap(f"envelope topic {go_quote(topic)}") from None


def validate_envelope(envelope: events_pb2.Envelope) -> None:
    try:
        validate_identifier(envelope.namespace)
    except InvalidArgument as exc:
        raise exc.wrap("event envelope has invalid namespace") from None
    validate_topic(envelope.topic)
    if not envelope.HasField("timestamp") or (envelope.timestamp.seconds == 0 and envelope.timestamp.nanos == 0):
        raise InvalidArgument("timestamp must be set on forwarded event")


class Subscription:
    """One subscriber's queue; iterate to receive envelopes until closed."""

    def __init__(self, bus: "EventBus", matcher: Optional[Matcher]) -> None:
        self._bus = bus
        self._matcher = matcher
        self._queue: "queue.Queue[object]" = queue.Queue(SUBSCRIBER_QUEUE)
        self.closed = False

    def offer(self, envelope: events_pb2.Envelope) -> None:
        if self.closed:
            return
        try:
            if self._matcher is not None and not self._matcher(envelope):
                return
        except Exception:  # noqa: BLE001 - a filter that cannot evaluate means "no match"
            return
        try:
            self._queue.put_nowait(envelope)
        except queue.Full:
            log.warning("dropping event subscriber that stopped reading (%d events queued)", SUBSCRIBER_QUEUE)
            self.close()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._bus._remove(self)
            try:
                self._queue.put_nowait(_CLOSED)
            except queue.Full:
                pass

    def next(self, timeout: float) -> Optional[events_pb2.Envelope]:
        """The next envelope, None on timeout; raises StopIteration once closed."""
        try:
            item = self._queue.get(timeout=timeout)
        except queue.Empty:
            if self.closed:
                raise StopIteration from None
            return None
        if item is _CLOSED:
            raise StopIteration
        return item  # type: ignore[return-value]

    def __iter__(self) -> Iterator[events_pb2.Envelope]:
        while True:
            try:
                item = self.next(1.0)
            except StopIteration:
                return
            if item is not None:
                yield item


class EventBus:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscribers: list[Subscription] = []
        self._closed = False
        self._valid_namespaces: set[str] = set()
        self._valid_topics: set[str] = set()

    def publish(self, namespace: str, topic: str,
                event: pb_message.Message | any_pb2.Any | Callable[[], pb_message.Message]
                ) -> Optional[events_pb2.Envelope]:
        """Stamp and broadcast an event in ``namespace`` (the servicers' publish hook).

        The namespace and topic are always checked (a bad one is the
        publisher's error, subscribers or not); the envelope is only built
        when someone subscribes, so a write nobody listens to pays for no
        serialisation. ``event`` may be a function that makes the event, for
        publishers whose event costs work to build: it is only called then.
        Returns the envelope, None when nobody received it.
        """
        if namespace not in self._valid_namespaces:
            try:
                validate_identifier(namespace)
            except InvalidArgument as exc:
                raise exc.wrap("failed publishing event: namespace validation") from None
            self._remember(self._valid_namespaces, namespace)
        if topic not in self._valid_topics:
            validate_topic(topic)
            self._remember(self._valid_topics, topic)
        if not self._subscribers:
            return None
        if callable(event):  # a publisher that builds its event only for subscribers
            event = event()
        now_ns = time.time_ns()
        envelope = events_pb2.Envelope(
            timestamp=timestamp_pb2.Timestamp(seconds=now_ns // 1_000_000_000, nanos=now_ns % 1_000_000_000),
            namespace=namespace, topic=topic, event=pack_event(event))
        self._broadcast(envelope)
        return envelope

    @staticmethod
    def _remember(valid: set[str], value: str) -> None:
        if len(valid) >= _VALID_CACHE_MAX:
            valid.clear()  # many distinct names: start over rather than grow
        valid.add(value)

    def forward(self, envelope: events_pb2.Envelope) -> None:
        validate_envelope(envelope)
        self._broadcast(envelope)

    def subscribe(self, matcher: Optional[Matcher] = None) -> Subscription:
        sub = Subscription(self, matcher)
        with self._lock:
            if self._closed:
                sub.closed = True
                sub._queue.put_nowait(_CLOSED)
            else:
                self._subscribers.append(sub)
        return sub

    def subscriber_count(self) -> int:
        with self._lock:
            return len(self._subscribers)

    def close(self) -> None:
        """End every subscription (server shutdown): streams finish cleanly."""
        with self._lock:
            self._closed = True
            subs = list(self._subscribers)
        for sub in subs:
            sub.close()

    def _remove(self, sub: Subscription) -> None:
        with self._lock:
            if sub in self._subscribers:
                self._subscribers.remove(sub)

    def _broadcast(self, envelope: events_pb2.Envelope) -> None:
        with self._lock:
            subs = list(self._subscribers)
        for sub in subs:
            sub.offer(envelope)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("event published", extra={"topic": envelope.topic, "ns": envelope.namespace,
                                                 "type": envelope.event.type_url})
