"""One place that turns our exceptions into gRPC statuses.

containerd's errdefs.ToGRPC maps an error kind to a code and sends the error
text as the status message; clients (ctr, nerdctl, the Go client) branch on
the code and print the text, so both must match. Every servicer wraps its
methods with :func:`grpc_errors`, so no exception ever escapes as a bare
UNKNOWN with a Python traceback in it.
"""

from __future__ import annotations

import functools
import inspect
import logging
from typing import Any, Callable, Iterator, Optional, TypeVar

import grpc

from .. import bolt
from ..errors import BoltImagesError
from ..store.validation import namespace_required

log = logging.getLogger("boltimages.server")

#: request metadata key carrying the namespace (ttrpc uses "-ttrpc" suffixed)
NAMESPACE_HEADER = "containerd-namespace"
#: Go's proto.Unmarshal error for bytes that are not a message, which
#: containerd passes on unclassified (code Unknown)
BAD_WIRE_FORMAT = "proto: cannot parse invalid wire-format data"

F = TypeVar("F", bound=Callable[..., Any])

# engine failures that are not a caller's mistake; what an operator should see
_BOLT_CODES: dict[type, grpc.StatusCode] = {
    bolt.DatabaseLocked: grpc.StatusCode.UNAVAILABLE,
    bolt.DatabaseClosed: grpc.StatusCode.UNAVAILABLE,
    bolt.TxBusy: grpc.StatusCode.UNAVAILABLE,
    bolt.CorruptDatabase: grpc.StatusCode.DATA_LOSS,
    bolt.InvalidDatabase: grpc.StatusCode.DATA_LOSS,
    bolt.VersionMismatch: grpc.StatusCode.FAILED_PRECONDITION,
    bolt.DatabaseReadOnly: grpc.StatusCode.FAILED_PRECONDITION,
}
# bbolt's per-key errors (key required, key too large, value too large...) are
# deliberately absent: containerd returns them unwrapped, so clients get Unknown


class RawStatus(Exception):
    """A status sent exactly as given, for the places where containerd calls
    status.Errorf itself instead of going through errdefs (no ": <kind>" suffix)."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def to_status(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """(code, message) for any exception a servicer lets escape."""
    if isinstance(exc, RawStatus):
        return exc.code, exc.message
    if isinstance(exc, BoltImagesError):
        return getattr(grpc.StatusCode, exc.grpc_code, grpc.StatusCode.UNKNOWN), str(exc)
    if isinstance(exc, bolt.BoltError):
        for kind, code in _BOLT_CODES.items():
            if isinstance(exc, kind):
                return code, str(exc)
        # containerd passes bbolt's own errors through untyped: Unknown
        return grpc.StatusCode.UNKNOWN, str(exc)
    # a bug of ours: the traceback goes to the server log (see _report), and the client gets
    # neither Python's class names nor a repr of whatever the exception held
    return grpc.StatusCode.INTERNAL, "internal error in boltimages; the server log has the details"


#: Status messages travel in the grpc-message trailer, and gRPC clients refuse
#: trailers above their metadata limit (grpc core's soft limit is 8 KiB, its
#: hard one 16 KiB; grpc-go's default 8 KiB list on some paths). A message
#: quoting a 40 KB image name would turn a clean NotFound into
#: RESOURCE_EXHAUSTED, so long messages keep their head and tail and say how
#: much was left out. The cap is on the bytes as sent: UTF-8, then every byte
#: outside printable ASCII (and '%') percent-encoded as three, so a capped
#: CJK message is 4 KiB on the wire too, not 12 KiB (UTF-8) or 36 KiB (a
#: cap in characters).
MAX_STATUS_MESSAGE = 4096

# bytes that grpc-message carries as themselves (printable ASCII except '%')
_PLAIN_BYTES = bytes(b for b in range(0x20, 0x7F) if b != 0x25)


def wire_size(text: str) -> int:
    """Bytes of `text` in a grpc-message trailer (UTF-8, percent-encoded)."""
    raw = text.encode("utf-8", "replace")
    return len(raw) + 2 * len(raw.translate(None, _PLAIN_BYTES))


def _longest_fitting(message: str, budget: int, from_end: bool) -> int:
    """Most whole characters from one end of `message` within `budget` wire
    bytes (each character costs at least one byte: at most `budget` of them)."""
    low, high = 0, min(budget, len(message))
    while low < high:
        mid = (low + high + 1) // 2
        part = message[len(message) - mid:] if from_end else message[:mid]
        if wire_size(part) <= budget:
            low = mid
        else:
            high = mid - 1
    return low


def cap_message(message: str) -> str:
    # (every character costs at least one byte: a longer one never fits)
    if len(message) <= MAX_STATUS_MESSAGE and wire_size(message) <= MAX_STATUS_MESSAGE:
        return message
    # room for "...[<count> characters omitted]..." with a count of any length
    side = (MAX_STATUS_MESSAGE - 64) // 2
    head = _longest_fitting(message, side, from_end=False)
    tail = _longest_fitting(message, side, from_end=True)
    omitted = len(message) - head - tail
    return f"{message[:head]}...[{omitted} characters omitted]...{message[len(message) - tail:]}"


def _report(exc: BaseException, context: grpc.ServicerContext, method: str) -> None:
    code, message = to_status(exc)
    message = cap_message(message)
    if code is grpc.StatusCode.INTERNAL:
        log.error("unexpected failure in %s", method, exc_info=exc)
    else:
        log.debug("%s failed: %s (%s)", method, message, code.name)
    context.abort(code, message)


def grpc_errors(method: F) -> F:
    """Decorator for servicer methods (unary or server-streaming generators)."""
    name = method.__qualname__
    if inspect.isgeneratorfunction(method):
        @functools.wraps(method)
        def stream(self: Any, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            try:
                yield from method(self, request, context)
            except Exception as exc:  # noqa: BLE001 - turned into a status below
                _report(exc, context, name)
        return stream  # type: ignore[return-value]

    @functools.wraps(method)
    def unary(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return method(self, request, context)
        except Exception as exc:  # noqa: BLE001 - turned into a status below
            _report(exc, context, name)
    return unary  # type: ignore[return-value]


def request_namespace(context: grpc.ServicerContext) -> Optional[str]:
    """The raw ``containerd-namespace`` value of a call, or None."""
    for key, value in context.invocation_metadata() or ():
        if key == NAMESPACE_HEADER:
            return value if isinstance(value, str) else value.decode("utf-8", "replace")
    return None


def namespace(context: grpc.ServicerContext) -> str:
    """The call's namespace, validated like containerd's NamespaceRequired."""
    return namespace_required(request_namespace(context))


def parse_filters_once(texts: "list[str]") -> Any:
    """containerd's filters.ParseAll as services that return its error as is see it.

    The store-level :func:`filters.parse_all` reproduces the doubled
    ": invalid argument" suffix of stores that wrap the error again (leases,
    images, introspection); Content/List, Snapshots/List and Events/Subscribe
    pass ParseAll's error on unwrapped, with a single suffix.
    """
    from ..errors import InvalidArgument
    from ..store import filters
    parsed = []
    for text in texts:
        try:
            one = filters.parse(text)
        except filters.FilterSyntaxError as exc:
            raise InvalidArgument(str(exc)) from None
        parsed.append(one if one is not None else filters.Filter([]))
    return filters.AnyFilter(parsed)
