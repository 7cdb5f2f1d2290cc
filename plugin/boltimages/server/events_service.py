"""containerd.services.events.v1.Events over the in-process :class:`EventBus`."""

from __future__ import annotations

from typing import Iterator, Sequence

import grpc
from google.protobuf import any_pb2, empty_pb2, message as pb_message, symbol_database

from ..api.containerd.services.events.v1 import events_pb2, events_pb2_grpc
from ..errors import BoltImagesError, InvalidArgument
from .event_bus import EventBus, Matcher
from .status import RawStatus, grpc_errors, namespace, parse_filters_once

#: how often a streaming Subscribe checks whether its client went away
_POLL_SECONDS = 0.5


def _decode_event(event: any_pb2.Any) -> "pb_message.Message | None":
    """The event message when its type is one we know (bare or type.googleapis.com URL)."""
    name = event.type_url.rsplit("/", 1)[-1]
    try:
        cls = symbol_database.Default().GetSymbol(name)
    except KeyError:
        return None
    msg = cls()
    try:
        msg.ParseFromString(event.value)
    except pb_message.DecodeError:
        return None
    return msg


def _field_of(msg: pb_message.Message, path: Sequence[str]) -> tuple[str, bool]:
    """containerd's generated Field() adaptors: string fields, maps by joined key, nested messages."""
    if not path:
        return "", False
    fd = msg.DESCRIPTOR.fields_by_name.get(path[0])
    if fd is None:
        return "", False
    value = getattr(msg, path[0])
    if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
        key = ".".join(path[1:])
        return (value[key], True) if key in value else ("", False)
    if fd.message_type is not None and fd.label != fd.LABEL_REPEATED:
        return _field_of(value, path[1:]) if msg.HasField(path[0]) else ("", False)
    if fd.type == fd.TYPE_STRING and len(path) == 1:
        return value, len(value) > 0
    return "", False


def envelope_adaptor(envelope: events_pb2.Envelope):
    """Fields of an envelope for filters: namespace, topic, event.<field...> (timestamp unhandled)."""
    def adaptor(path: Sequence[str]) -> tuple[str, bool]:
        if not path:
            return "", False
        if path[0] == "namespace":
            return envelope.namespace, bool(envelope.namespace)
        if path[0] == "topic":
            return envelope.topic, bool(envelope.topic)
        if path[0] == "event":
            decoded = _decode_event(envelope.event)
            return _field_of(decoded, path[1:]) if decoded is not None else ("", False)
        return "", False
    return adaptor


def compile_matcher(texts: Sequence[str]) -> "Matcher | None":
    if not texts:
        return None
    parsed = parse_filters_once(list(texts))
    return lambda envelope: parsed.match(envelope_adaptor(envelope))


class EventsServicer(events_pb2_grpc.EventsServicer):
    def __init__(self, bus: EventBus) -> None:
        self.bus = bus

    @grpc_errors
    def Publish(self, request: events_pb2.PublishRequest, context: grpc.ServicerContext) -> empty_pb2.Empty:
        try:
            ns = namespace(context)
        except BoltImagesError as exc:
            raise exc.wrap("failed publishing event") from None
        self.bus.publish(ns, request.topic, request.event)
        return empty_pb2.Empty()

    @grpc_errors
    def Forward(self, request: events_pb2.ForwardRequest, context: grpc.ServicerContext) -> empty_pb2.Empty:
        self.bus.forward(request.envelope)
        return empty_pb2.Empty()

    @grpc_errors
    def Subscribe(self, request: events_pb2.SubscribeRequest,
                  context: grpc.ServicerContext) -> Iterator[events_pb2.Envelope]:
        try:
            matcher = compile_matcher(request.filters)
        except InvalidArgument as exc:
            # containerd's events service returns this as a plain error: code Unknown
            raise RawStatus(grpc.StatusCode.UNKNOWN,
                            f"subscription error: failed parsing subscription filters: {exc}") from None
        sub = self.bus.subscribe(matcher)
        # a client hanging up must release its queue even while no event arrives
        context.add_callback(sub.close)
        try:
            while context.is_active():
                try:
                    envelope = sub.next(_POLL_SECONDS)
                except StopIteration:
                    return
                if envelope is not None:
                    yield envelope
        finally:
            sub.close()
