"""containerd's filter language, as List requests use it.

A filter is ``selector[,selector...]`` (all must match); a request may send
several filters and an object is returned when ANY of them matches. A
selector is ``fieldpath`` (presence test) or ``fieldpath OP value`` with
OP one of ``==``, ``!=``, ``~=`` (regular expression, unanchored). Field
names are ``[A-Za-z0-9_]+`` runs or double-quoted strings joined by ``.``;
values are bare runs of printable characters up to ``,``/space, or quoted
with ``"``; after ``~=`` the quotes may also be ``/.../`` or ``|...|``.

The scanner and parser below reproduce containerd's behaviour on purpose,
quirks included, because clients see the results and the error text:

* positions in error messages are byte offsets into the UTF-8 input;
* a space after a complete selector is "unexpected input", not skipped;
* ``!=`` matches objects that lack the field (unless the value is empty);
* a regular expression that does not compile matches nothing (containerd
  only logs it), it is not an error (our offline tools ask for an error).

Regular expressions are Go's regexp, RE2 syntax, matched as an unanchored
search; we compile them with RE2 itself (see :func:`compile_regex`).
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import re2

from ..errors import InvalidArgument, go_quote
from .image_records import is_utf8

# Adaptor: fieldpath -> (value, present)
Adaptor = Callable[[Sequence[str]], "tuple[str, bool]"]

_EOF = -1
_ILLEGAL = -7
_RUNE_ERROR = 0xFFFD

# token kinds (negative so they cannot collide with a rune)
TOKEN_QUOTED = -2
TOKEN_VALUE = -3
TOKEN_FIELD = -4
TOKEN_SEPARATOR = -5
TOKEN_OPERATOR = -6
TOKEN_ILLEGAL = -7


class FilterSyntaxError(ValueError):
    """Parse failure; str() is containerd's ``parse error: [...]: msg`` text."""


def _decode_rune(data: bytes, i: int) -> tuple[int, int]:
    """One UTF-8 rune at data[i:] like Go's utf8.DecodeRune: (rune, width)."""
    if i >= len(data):
        return _RUNE_ERROR, 0
    lead = data[i]
    if lead < 0x80:
        return lead, 1
    for width in (2, 3, 4):
        chunk = data[i:i + width]
        try:
            text = chunk.decode("utf-8")
        except UnicodeDecodeError:
            continue
        if len(text) == 1:
            return ord(text), width
    return _RUNE_ERROR, 1


def _is_space(r: int) -> bool:
    # Go unicode.IsSpace: Latin-1 set plus the White_Space property
    if r in (0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x20, 0x85, 0xA0):
        return True
    if r < 0x100:
        return False
    return chr(r).isspace()


def _is_field_rune(r: int) -> bool:
    return r == 0x5F or 0x41 <= r <= 0x5A or 0x61 <= r <= 0x7A or 0x30 <= r <= 0x39


def _is_value_rune(r: int) -> bool:
    if r < 0 or r == 0x2C or _is_space(r):
        return False
    # letters, marks, numbers, punctuation, symbols (and the space
    # separators, already excluded above): Go's IsGraphic/IsPunct/...
    return unicodedata.category(chr(r))[0] in "LMNPSZ"


def _is_quote_rune(r: int) -> bool:
    return r in (0x2F, 0x7C, 0x22)  # / | "


def _is_separator_rune(r: int) -> bool:
    return r in (0x2C, 0x2E)  # , .


def _is_operator_rune(r: int) -> bool:
    return r in (0x3D, 0x21, 0x7E)  # = ! ~


def _digit_val(r: int) -> int:
    if 0x30 <= r <= 0x39:
        return r - 0x30
    if 0x61 <= r <= 0x66:
        return r - 0x61 + 10
    if 0x41 <= r <= 0x46:
        return r - 0x41 + 10
    return 16


class _Scanner:
    def __init__(self, data: bytes) -> None:
        self.input = data
        self.pos = 0
        self.ppos = 0
        self.value = False
        self.err = ""

    def next(self) -> int:
        if self.pos >= len(self.input):
            return _EOF
        self.pos = self.ppos
        r, w = _decode_rune(self.input, self.ppos)
        self.ppos += w
        if r == _RUNE_ERROR:
            if w > 0:
                self.error("rune error")
                return _ILLEGAL
            return _EOF
        if r == 0:
            self.error("unexpected null")
            return _ILLEGAL
        return r

    def peek(self) -> int:
        pos, ppos = self.pos, self.ppos
        ch = self.next()
        self.pos, self.ppos = pos, ppos
        return ch

    def scan(self) -> tuple[int, int, bytes]:
        ch = self.next()
        pos = self.pos
        while True:
            if ch == _EOF or ch == _ILLEGAL:
                break
            if _is_quote_rune(ch):
                if not self.scan_quoted(ch):
                    return pos, TOKEN_ILLEGAL, self.input[pos:self.ppos]
                return pos, TOKEN_QUOTED, self.input[pos:self.ppos]
            if _is_separator_rune(ch):
                self.value = False
                return pos, TOKEN_SEPARATOR, self.input[pos:self.ppos]
            if _is_operator_rune(ch):
                self.scan_while(_is_operator_rune)
                self.value = True
                return pos, TOKEN_OPERATOR, self.input[pos:self.ppos]
            if _is_space(ch):
                ch = self.next()
                pos = self.pos
                continue
            if self.value:
                self.scan_while(_is_value_rune)
                self.value = False
                return pos, TOKEN_VALUE, self.input[pos:self.ppos]
            if _is_field_rune(ch):
                self.scan_while(_is_field_rune)
                return pos, TOKEN_FIELD, self.input[pos:self.ppos]
            break
        return self.pos, ch, b""

    def scan_while(self, accept: Callable[[int], bool]) -> None:
        while accept(self.peek()):
            self.next()

    def scan_quoted(self, quote: int) -> bool:
        illegal = False
        ch = self.next()
        while ch != quote:
            if ch == 0x0A or ch < 0:
                self.error("quoted literal not terminated")
                return False
            if ch == 0x5C:  # backslash
                ch, legal = self.scan_escape(quote)
                if not legal:
                    illegal = True
            else:
                ch = self.next()
        return not illegal

    def scan_escape(self, quote: int) -> tuple[int, bool]:
        ch = self.next()
        if ch in (0x61, 0x62, 0x66, 0x6E, 0x72, 0x74, 0x76, 0x5C, quote):
            return self.next(), True
        if 0x30 <= ch <= 0x37:
            return self.scan_digits(ch, 8, 3)
        if ch == 0x78:
            return self.scan_digits(self.next(), 16, 2)
        if ch == 0x75:
            return self.scan_digits(self.next(), 16, 4)
        if ch == 0x55:
            return self.scan_digits(self.next(), 16, 8)
        self.error("illegal escape sequence")
        return ch, False

    def scan_digits(self, ch: int, base: int, n: int) -> tuple[int, bool]:
        while n > 0 and _digit_val(ch) < base:
            ch = self.next()
            n -= 1
        if n > 0:
            self.error("illegal numeric escape sequence")
            return ch, False
        return ch, True

    def error(self, msg: str) -> None:
        if not self.err:
            self.err = msg


class _QuoteSyntax(ValueError):
    def __str__(self) -> str:
        return "quote syntax error"


def _unquote(s: bytes) -> bytes:
    """Go-string-like unquoting for the quotes " ' / | (and raw `)."""
    if len(s) < 2 or s[0] != s[-1]:
        raise _QuoteSyntax()
    quote = s[0]
    body = s[1:-1]
    if quote == 0x60:
        if b"`" in body:
            raise _QuoteSyntax()
        return body.replace(b"\r", b"")
    if quote not in (0x22, 0x27, 0x7C, 0x2F):
        raise _QuoteSyntax()
    if b"\n" in body:
        raise _QuoteSyntax()
    if b"\\" not in body and bytes([quote]) not in body:
        if quote != 0x27:
            return body
        r, size = _decode_rune(body, 0)
        if size == len(body) and (r != _RUNE_ERROR or size != 1):
            return body
    out = bytearray()
    while body:
        value, multibyte, body = _unquote_char(body, quote)
        if value < 0x80 or not multibyte:
            out.append(value & 0xFF)
        else:
            out += chr(value).encode("utf-8", "surrogatepass")
        if quote == 0x27 and body:
            raise _QuoteSyntax()
    return bytes(out)


_SIMPLE_ESCAPES = {0x61: 7, 0x62: 8, 0x66: 12, 0x6E: 10, 0x72: 13, 0x74: 9, 0x76: 11, 0x5C: 0x5C}


def _unquote_char(s: bytes, quote: int) -> tuple[int, bool, bytes]:
    c = s[0]
    if c == quote and quote in (0x27, 0x22, 0x2F, 0x7C):
        raise _QuoteSyntax()
    if c >= 0x80:
        r, size = _decode_rune(s, 0)
        return r, True, s[size:]
    if c != 0x5C:
        return c, False, s[1:]
    if len(s) <= 1:
        raise _QuoteSyntax()
    c = s[1]
    s = s[2:]
    if c in _SIMPLE_ESCAPES:
        return _SIMPLE_ESCAPES[c], False, s
    if c in (0x78, 0x75, 0x55):
        n = {0x78: 2, 0x75: 4, 0x55: 8}[c]
        if len(s) < n:
            raise _QuoteSyntax()
        v = 0
        for j in range(n):
            d = _digit_val(s[j])
            if d >= 16:
                raise _QuoteSyntax()
            v = (v << 4) | d
        s = s[n:]
        if c == 0x78:
            return v, False, s
        if v > 0x10FFFF:
            raise _QuoteSyntax()
        return v, True, s
    if 0x30 <= c <= 0x37:
        v = c - 0x30
        if len(s) < 2:
            raise _QuoteSyntax()
        for j in range(2):
            x = s[j] - 0x30
            if x < 0 or x > 7:
                raise _QuoteSyntax()
            v = (v << 3) | x
        s = s[2:]
        if v > 255:
            raise _QuoteSyntax()
        return v, False, s
    if c in (0x27, 0x22, 0x7C, 0x2F):
        if c != quote:
            raise _QuoteSyntax()
        return c, False, s
    raise _QuoteSyntax()


def _text(b: bytes) -> str:
    return b.decode("utf-8", "replace")


# --- the filter tree --------------------------------------------------------

OP_PRESENT = "?"
OP_EQUAL = "=="
OP_NOT_EQUAL = "!="
OP_MATCHES = "~="


@dataclass
class Selector:
    fieldpath: tuple[str, ...]
    operator: str
    value: str = ""
    #: why the ``~=`` value does not compile (None: it does, or no regex)
    regex_error: Optional[str] = None
    _regex: Optional["GoRegex"] = field(default=None, repr=False)

    def __post_init__(self) -> None:
        # compiled once at parse time: RE2 compiles in microseconds, and an
        # invalid pattern is then known before any record is read
        if self.operator == OP_MATCHES and self.regex_error is None:
            try:
                self._regex = compile_regex(self.value)
            except RegexError as exc:
                self.regex_error = str(exc)

    def compiled_regex(self) -> Optional["GoRegex"]:
        """The compiled ``~=`` pattern; None when it does not compile (or no regex)."""
        return self._regex

    def match(self, adaptor: Adaptor) -> bool:
        value, present = adaptor(self.fieldpath)
        if self.operator == OP_PRESENT:
            return present
        if self.operator == OP_EQUAL:
            return present and value == self.value
        if self.operator == OP_NOT_EQUAL:
            return value != self.value
        if self.operator == OP_MATCHES:
            # containerd logs a pattern that does not compile and matches nothing
            return self._regex is not None and regex_search(self._regex, value)
        return False


@dataclass
class Filter:
    """All selectors must match (one comma-separated filter string)."""

    selectors: list[Selector]

    def match(self, adaptor: Adaptor) -> bool:
        return all(s.match(adaptor) for s in self.selectors)


@dataclass
class AnyFilter:
    """Any of the filters must match (the repeated ``filters`` field)."""

    filters: list[Filter]

    def match(self, adaptor: Adaptor) -> bool:
        if not self.filters:
            return True
        return any(f.match(adaptor) for f in self.filters)

    def regex_errors(self) -> list[str]:
        """Why each ``~=`` value that does not compile fails, in filter order."""
        return [s.regex_error for f in self.filters for s in f.selectors if s.regex_error is not None]


# Regular expressions are compiled by RE2 itself (google-re2), the library
# whose syntax and linear-time matching Go's regexp reproduces. The Python
# ``re`` engine it replaces backtracks: ``labels.x~=(a+)+$`` against one
# 27-character label took 13 s and held the GIL, stalling every other call
# on the server; RE2 answers the same List in about 30 us. RE2 also has the
# full Unicode tables (\\p{Greek}), which a translation to ``re`` lacked.
_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # a client's bad pattern is not the server's error log


class RegexError(ValueError):
    """A ``~=`` value that Go's regexp.Compile would refuse."""


def _go_only_rejects(pattern: str) -> Optional[str]:
    """What Go refuses although the RE2 library accepts it, or None.

    Go's regexp/syntax has no ``\\C`` (any byte): RE2 reads it, Go answers
    "invalid escape sequence". Text between ``\\Q`` and ``\\E`` is literal in
    both, so an escape there is not one."""
    i, n = 0, len(pattern)
    while i < n - 1:
        if pattern[i] != "\\":
            i += 1
            continue
        nxt = pattern[i + 1]
        if nxt == "C":
            return "invalid escape sequence: `\\C`"
        if nxt == "Q":
            end = pattern.find("\\E", i + 2)
            if end < 0:
                return None
            i = end + 2
            continue
        i += 2
    return None


class GoRegex:
    """A compiled ``~=`` pattern: Go's ``MatchString``, a yes/no unanchored
    search, over UTF-8 bytes.

    Patterns are compiled as bytes (still matched as UTF-8): google-re2's
    str path converts every match offset back to characters, 4.5 us a search
    against 1.5 us on bytes (Python's ``re``: 0.12 us, but exponential). A
    one-pattern ``RE2::Set`` answers yes/no without computing where the
    match is, in about a third of that again; a Set runs on the DFA alone
    and answers "no match" if its cache cannot hold even one state, so it is
    used only for programs far too small for that (RE2's budget holds
    hundreds of states of the largest one allowed here).
    """

    __slots__ = ("pattern", "search")

    _SET_MAX_PROGRAM = 2000

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        encoded = pattern.encode("utf-8")
        regexp = re2.compile(encoded, _RE2_OPTIONS)
        if regexp.programsize <= self._SET_MAX_PROGRAM:
            one = re2.Set.SearchSet(_RE2_OPTIONS)
            one.Add(encoded)
            one.Compile()
            match = one.Match
            self.search: Callable[[bytes], bool] = lambda data: match(data) is not None
        else:
            search = regexp.search
            self.search = lambda data: search(data) is not None


def compile_regex(pattern: str) -> GoRegex:
    """Compile a ``~=`` value as Go's regexp.Compile would, or raise RegexError.

    Go and the RE2 library agree on syntax but for ``\\C`` (see above) and
    named groups spelled ``(?<name>...)``: Go accepts them from 1.22 on, so
    containerd 1.7.24 and 2.1.9 (built with Go 1.24 and 1.27) do and 1.6.20
    (Go 1.19) does not; RE2 does, and so do we. RE2 also caps a compiled
    pattern at its default 8 MiB budget, where Go has a larger cap: a huge
    repeat of a big class (``\\pL{1000}``) compiles in Go and is refused
    here (its memory is the server's)."""
    reason = _go_only_rejects(pattern)
    if reason is None:
        try:
            return GoRegex(pattern)
        except re2.error as exc:
            detail = exc.args[0] if exc.args else "invalid pattern"
            reason = detail.decode("utf-8", "replace") if isinstance(detail, bytes) else str(detail)
        except UnicodeEncodeError:
            reason = "invalid UTF-8"
    raise RegexError(f"error parsing regexp {go_quote(pattern)}: {reason}")


# Go's regexp reads each byte of invalid UTF-8 in the text as U+FFFD, where
# RE2 matches no character at all. Stored values reach the adaptors decoded
# with surrogateescape (one lone surrogate per such byte): each becomes
# U+FFFD, as Go sees it.
_ESCAPED_BYTES_AS_GO_SEES_THEM = {cp: 0xFFFD for cp in range(0xDC80, 0xDD00)}


def regex_search(regex: GoRegex, value: str) -> bool:
    """Go's ``MatchString``: an unanchored search of the text ``value``."""
    try:
        data = value.encode("utf-8")
    except UnicodeEncodeError:
        data = value.translate(_ESCAPED_BYTES_AS_GO_SEES_THEM).encode("utf-8")
    return regex.search(data)


def regex_search_stored(regex: GoRegex, data: bytes) -> bool:
    """:func:`regex_search` of a value as stored (bytes), without decoding it
    when it is valid UTF-8, as stored values nearly always are."""
    if not is_utf8(data):
        return regex_search(regex, data.decode("utf-8", "surrogateescape"))
    return regex.search(data)


class _Parser:
    def __init__(self, text: str) -> None:
        self.input = text.encode("utf-8", "surrogatepass")
        self.scanner = _Scanner(self.input)

    def parse(self) -> Filter:
        try:
            return self.selectors()
        except FilterSyntaxError as exc:
            raise FilterSyntaxError(f"filters: {exc}") from None

    def selectors(self) -> Filter:
        out = [self.selector()]
        while True:
            tok = self.scanner.peek()
            if tok == 0x2C:
                pos, kind, _ = self.scanner.scan()
                if kind != TOKEN_SEPARATOR:
                    raise self.mkerr(pos, "expected a separator")
                out.append(self.selector())
            elif tok == _EOF:
                return Filter(out)
            else:
                shown = "\ufffd" if tok < 0 else chr(tok)
                raise self.mkerr(self.scanner.ppos, f"unexpected input: {shown}")

    def selector(self) -> Selector:
        path = self.fieldpath()
        if self.scanner.peek() in (0x2C, TOKEN_SEPARATOR, _EOF):
            return Selector(tuple(path), OP_PRESENT)
        op = self.operator()
        raw = self.value(allow_alt_quotes=(op == OP_MATCHES))
        error = None
        if op == OP_MATCHES and not is_utf8(raw):
            # an escape such as \xff in a quoted value: Go's compiler refuses it
            error = f"error parsing regexp {_go_quote_bytes(raw)}: invalid UTF-8"
        return Selector(tuple(path), op, _text(raw), error)

    def fieldpath(self) -> list[str]:
        out = [self.field()]
        while self.scanner.peek() == 0x2E:
            pos, kind, _ = self.scanner.scan()
            if kind != TOKEN_SEPARATOR:
                raise self.mkerr(pos, "expected a field separator (`.`)")
            out.append(self.field())
        return out

    def field(self) -> str:
        pos, kind, text = self.scanner.scan()
        if kind == TOKEN_FIELD:
            return _text(text)
        if kind == TOKEN_QUOTED:
            return self.unquote(pos, text, False)
        if kind == TOKEN_ILLEGAL:
            raise self.mkerr(pos, self.scanner.err)
        raise self.mkerr(pos, "expected field or quoted")

    def operator(self) -> str:
        pos, kind, text = self.scanner.scan()
        if kind == TOKEN_OPERATOR:
            op = _text(text)
            if op in (OP_EQUAL, OP_NOT_EQUAL, OP_MATCHES):
                return op
            raise self.mkerr(pos, f"unsupported operator {_go_quote_bytes(text)}")
        if kind == TOKEN_ILLEGAL:
            raise self.mkerr(pos, self.scanner.err)
        raise self.mkerr(pos, 'expected an operator ("=="|"!="|"~=")')

    def value(self, allow_alt_quotes: bool) -> bytes:
        pos, kind, text = self.scanner.scan()
        if kind in (TOKEN_VALUE, TOKEN_FIELD):
            return text
        if kind == TOKEN_QUOTED:
            return self.unquote_bytes(pos, text, allow_alt_quotes)
        if kind == TOKEN_ILLEGAL:
            raise self.mkerr(pos, self.scanner.err)
        raise self.mkerr(pos, "expected value or quoted")

    def unquote(self, pos: int, text: bytes, allow_alts: bool) -> str:
        return _text(self.unquote_bytes(pos, text, allow_alts))

    def unquote_bytes(self, pos: int, text: bytes, allow_alts: bool) -> bytes:
        if not allow_alts and text[:1] not in (b"'", b'"'):
            raise self.mkerr(pos, "invalid quote encountered")
        try:
            return _unquote(text)
        except _QuoteSyntax as exc:
            raise self.mkerr(pos, f"unquoting failed: {exc}") from None

    def mkerr(self, pos: int, msg: str) -> FilterSyntaxError:
        data = self.input
        if pos < len(data):
            before, here, after = data[:pos], data[pos:pos + 1], data[pos + 1:]
            where = f"[{_text(before)} >|{_text(here)}|< {_text(after)}]"
        else:
            where = f"[{_text(data)}]"
        return FilterSyntaxError(f"parse error: {where}: {msg}")


def _go_quote_bytes(text: bytes) -> str:
    return go_quote(_text(text))


# Parsed filters by text. Clients repeat the same few filters, and a parsed
# Filter is never changed by matching, so requests share them. A compiled
# RE2 pattern keeps its DFA cache (up to RE2's 8 MiB budget per pattern) for
# as long as it lives, so filters with a regex have a cache of their own,
# much smaller: a client sending distinct patterns cannot make the server
# keep more than 16 of them (compiling one again costs 10-600 us).
_PARSED: dict[str, Filter] = {}
_PARSED_MAX = 256
_PARSED_REGEX: dict[str, Filter] = {}
_PARSED_REGEX_MAX = 16


def parse(text: str) -> Optional[Filter]:
    """One filter string; None means "always matches" (the empty string)."""
    if text == "":
        return None
    cached = _PARSED.get(text) or _PARSED_REGEX.get(text)
    if cached is not None:
        return cached
    parsed = _Parser(text).parse()
    regex = any(selector.compiled_regex() is not None for selector in parsed.selectors)
    cache, limit = (_PARSED_REGEX, _PARSED_REGEX_MAX) if regex else (_PARSED, _PARSED_MAX)
    if len(cache) >= limit:
        cache.clear()  # many distinct filters: start over rather than grow
    cache[text] = parsed
    return parsed


def parse_all(texts: Sequence[str], *, strict_regex: bool = False) -> AnyFilter:
    """The request's filters (OR). Syntax errors raise InvalidArgument.

    containerd wraps the parse error with its invalid-argument kind twice
    (once in the filter package, once in the store), so its message ends in
    ``: invalid argument: invalid argument``; ours does too.

    A ``~=`` value that does not compile is no syntax error to containerd:
    1.6.20 and 2.1.9 both answer such a List with OK and no image (checked
    against the real daemons; tests/compat/scenario.py keeps it so), and the
    server answers the same. ``strict_regex`` makes it InvalidArgument too,
    for our own tools, where a silent empty answer only misleads.
    """
    out: list[Filter] = []
    for text in texts:
        try:
            parsed = parse(text)
        except FilterSyntaxError as exc:
            raise InvalidArgument(f"{exc}: invalid argument") from None
        out.append(parsed if parsed is not None else Filter([]))
    matcher = AnyFilter(out)
    if strict_regex:
        errors = matcher.regex_errors()
        if errors:
            raise InvalidArgument(errors[0])
    return matcher
