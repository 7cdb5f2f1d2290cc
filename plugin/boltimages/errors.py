"""Error kinds shared by the stores and the gRPC servers.

containerd classifies every failure into a small set of kinds (its errdefs
package) and the gRPC layer turns each kind into one status code. Clients of
both containerd 1.x and 2.x branch on that code (``ctr images tag --force``
retries after AlreadyExists, for example), and humans read the text, so both
must match what containerd says.

containerd builds its messages by wrapping a kind sentinel with context,
``image "x": not found``; ``str()`` of our exceptions produces the same text:
the detail given to the constructor followed by ``": <kind>"``.
"""

from __future__ import annotations

from typing import Optional


class BoltImagesError(Exception):
    """Base class: every error a store or server raises on purpose."""

    #: the text containerd's errdefs sentinel for this kind prints
    kind_text = "unknown"
    #: name of the grpc.StatusCode member the servers map this kind to
    grpc_code = "UNKNOWN"

    def __init__(self, detail: str = "", *, cause: Optional[BaseException] = None) -> None:
        self.detail = detail
        if detail and self.kind_text:
            message = f"{detail}: {self.kind_text}"
        else:
            message = detail or self.kind_text
        super().__init__(message)
        if cause is not None:
            self.__cause__ = cause

    @property
    def message(self) -> str:
        return str(self)

    def wrap(self, prefix: str) -> "BoltImagesError":
        """Same kind, with ``prefix: `` in front, like Go's fmt.Errorf("%s: %w")."""
        new = type(self).__new__(type(self))
        new.detail = f"{prefix}: {self.detail}" if self.detail else prefix
        Exception.__init__(new, f"{prefix}: {self}")
        new.__cause__ = self.__cause__
        return new


class NotFound(BoltImagesError):
    kind_text = "not found"
    grpc_code = "NOT_FOUND"


class AlreadyExists(BoltImagesError):
    kind_text = "already exists"
    grpc_code = "ALREADY_EXISTS"


class InvalidArgument(BoltImagesError):
    kind_text = "invalid argument"
    grpc_code = "INVALID_ARGUMENT"


class FailedPrecondition(BoltImagesError):
    kind_text = "failed precondition"
    grpc_code = "FAILED_PRECONDITION"


class Unavailable(BoltImagesError):
    kind_text = "unavailable"
    grpc_code = "UNAVAILABLE"


class NotImplementedKind(BoltImagesError):
    kind_text = "not implemented"
    grpc_code = "UNIMPLEMENTED"


class Conflict(BoltImagesError):
    """containerd 2.x kind; reported as FailedPrecondition over gRPC."""

    kind_text = "conflict"
    grpc_code = "FAILED_PRECONDITION"


class DataCorruption(BoltImagesError):
    """A record in the file does not decode (bad time, missing target bucket).

    containerd returns such errors unclassified, which gRPC reports as
    Unknown with the bare text (no kind suffix); we do the same.
    """

    kind_text = ""
    grpc_code = "UNKNOWN"


class DatabaseUnavailable(Unavailable):
    """The metadata file cannot be opened (locked by containerd, unreadable...)."""


def without_path(message: str, path: str) -> str:
    """The engine starts its messages with the file's path (sometimes twice, and with
    "cannot open: "); a caller that names the file once already wants only the reason."""
    text = message
    changed = True
    while changed:
        changed = False
        for prefix in (path + ": ", "cannot open: ", "not a valid bolt database: "):
            if prefix and text.startswith(prefix):
                text = text[len(prefix):]
                changed = True
    return text


def go_quote(text: str) -> str:
    """Quote like Go's %q verb (strconv.Quote), so messages match containerd's byte for byte."""
    out = ['"']
    for ch in text:
        code = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch in _GO_SHORT_ESCAPES:
            out.append(_GO_SHORT_ESCAPES[ch])
        elif ch.isprintable() or ch == " ":
            out.append(ch)
        elif code < 0x80:
            out.append(f"\\x{code:02x}")
        elif 0xD800 <= code <= 0xDFFF:
            # a lone surrogate is not valid UTF-8; Go prints the replacement rune's escape
            out.append("\\ufffd")
        elif code <= 0xFFFF:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    out.append('"')
    return "".join(out)


_GO_SHORT_ESCAPES = {
    "\a": "\\a",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\v": "\\v",
}
