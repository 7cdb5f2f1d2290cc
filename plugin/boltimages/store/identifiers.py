"""Identifier rules containerd applies to namespace names (and lease ids).

containerd accepts 1..76 characters: alphanumeric runs joined by single
``.``, ``_`` or ``-`` separators. Names that break the rule can never be
created through containerd, so the stores refuse them with the same message
containerd gives (clients sometimes show it verbatim).
"""

from __future__ import annotations

import re

from ..errors import FailedPrecondition, InvalidArgument, go_quote

MAX_LENGTH = 76
#: the pattern text exactly as containerd prints it in error messages
PATTERN_TEXT = r"^[A-Za-z0-9]+(?:[._-](?:[A-Za-z0-9]+))*$"
# Go's "$" in RE2 matches only at the very end (no trailing-newline slack),
# hence fullmatch over an ASCII-only class
_PATTERN = re.compile(r"[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*")


def validate_identifier(value: str) -> None:
    """Raise InvalidArgument unless ``value`` is a valid containerd identifier."""
    if not value:
        raise InvalidArgument("identifier must not be empty")
    # Go measures bytes, not characters
    if len(value.encode("utf-8", "surrogatepass")) > MAX_LENGTH:
        raise InvalidArgument(
            f"identifier {go_quote(value)} greater than maximum length ({MAX_LENGTH} characters)")
    if not _PATTERN.fullmatch(value):
        raise InvalidArgument(f"identifier {go_quote(value)} must match {PATTERN_TEXT}")


def validate_namespace(value: str) -> None:
    """Namespace name check that the stores run for every request."""
    try:
        validate_identifier(value)
    except InvalidArgument as exc:
        raise exc.wrap("namespace validation") from None


#: namespaces already found valid: every request names one, and a server
#: sees few, so the pattern runs once per name instead of once per request
_VALID_NAMESPACES: set[str] = set()
_VALID_NAMESPACES_MAX = 1024


def namespace_required(value: "str | None") -> str:
    """containerd's rule for the request namespace: missing/empty → FailedPrecondition."""
    if value in _VALID_NAMESPACES:
        return value  # type: ignore[return-value]
    if not value:
        raise FailedPrecondition("namespace is required")
    validate_namespace(value)
    if len(_VALID_NAMESPACES) >= _VALID_NAMESPACES_MAX:
        _VALID_NAMESPACES.clear()
    _VALID_NAMESPACES.add(value)
    return value
