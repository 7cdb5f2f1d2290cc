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
  only logs it), it is not an error.

Regular expressions are Go RE2 syntax in containerd; we evaluate them with
Python's ``re`` after translating the few spellings that differ (``\\z``).
Patterns using features RE2 lacks (backreferences, lookaround) are treated
as not compiling, as RE2 would reject them.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

from ..errors import InvalidArgument

# Adaptor: fieldpath -> (value, present)
Adaptor = Callable[[Sequence[str]], "tuple[str, bool]"]

_EOF = -1
_ILLEGAL = -7
_RUNE_ERROR = 0xFFFD

# token kinds (negative so they cannot collide with a rune)
TOKEN_EOF = -1
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
    _regex: Optional["re.Pattern[str]"] = field(default=None, repr=False)
    _regex_failed: bool = field(default=False, repr=False)

    def match(self, adaptor: Adaptor) -> bool:
        value, present = adaptor(self.fieldpath)
        if self.operator == OP_PRESENT:
            return present
        if self.operator == OP_EQUAL:
            return present and value == self.value
        if self.operator == OP_NOT_EQUAL:
            return value != self.value
        if self.operator == OP_MATCHES:
            regex = self._compiled()
            return regex is not None and regex.search(value) is not None
        return False

    def _compiled(self) -> Optional["re.Pattern[str]"]:
        if self._regex is None and not self._regex_failed:
            self._regex = compile_go_regex(self.value)
            self._regex_failed = self._regex is None
        return self._regex


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


_RE2_UNSUPPORTED = re.compile(r"\\[1-9]|\(\?[=!<]|\(\?<[=!]|\(\?>|[*+?}]\+")
_RE2_MAX_REPEAT = 1000
_REPEAT = re.compile(r"\{(\d+)(?:,(\d*))?\}")
# RE2's Perl classes are ASCII-only; Python's are Unicode: spell them out
_PERL_CLASSES = {"d": "0-9", "w": "0-9A-Za-z_", "s": "\\t\\n\\f\\r ",}
_POSIX_CLASSES = {
    "alnum": "0-9A-Za-z", "alpha": "A-Za-z", "ascii": "\\x00-\\x7f", "blank": "\\t ",
    "cntrl": "\\x00-\\x1f\\x7f", "digit": "0-9", "graph": "!-~", "lower": "a-z",
    "print": " -~", "punct": "!-/:-@\\[-`{-~", "space": "\\t\\n\\v\\f\\r ", "upper": "A-Z",
    "word": "0-9A-Za-z_", "xdigit": "0-9A-Fa-f",
}
_category_cache: dict[str, list[tuple[int, int]]] = {}


def _category_runs(name: str) -> Optional[list[tuple[int, int]]]:
    """Code point runs of a Unicode general category (RE2 \\pL, \\p{Lu}, \\p{Any})."""
    if name in _category_cache:
        return _category_cache[name]
    if name == "Any":
        runs = [(0, 0x10FFFF)]
    elif len(name) in (1, 2) and name[0] in "CLMNPSZ":
        runs = []
        start = prev = -2
        for cp in range(0x110000):
            if unicodedata.category(chr(cp)).startswith(name):
                if cp != prev + 1:
                    if start >= 0:
                        runs.append((start, prev))
                    start = cp
                prev = cp
        if start >= 0:
            runs.append((start, prev))
        if not runs:
            return None
    else:
        return None  # scripts (Greek, Han...) have no table in Python's stdlib
    _category_cache[name] = runs
    return runs


def _category_body(name: str, negate: bool) -> Optional[str]:
    runs = _category_runs(name)
    if runs is None:
        return None
    if negate:
        inverted, next_cp = [], 0
        for lo, hi in runs:
            if lo > next_cp:
                inverted.append((next_cp, lo - 1))
            next_cp = hi + 1
        if next_cp <= 0x10FFFF:
            inverted.append((next_cp, 0x10FFFF))
        runs = inverted
    return "".join(_class_run(lo, hi) for lo, hi in runs)


def _class_run(lo: int, hi: int) -> str:
    return f"\\U{lo:08x}" if lo == hi else f"\\U{lo:08x}-\\U{hi:08x}"


_ASCII_WORD = "[0-9A-Za-z_]"
_WORD_BOUNDARY = f"(?:(?<={_ASCII_WORD})(?!{_ASCII_WORD})|(?<!{_ASCII_WORD})(?={_ASCII_WORD}))"
_NOT_WORD_BOUNDARY = f"(?:(?<={_ASCII_WORD})(?={_ASCII_WORD})|(?<!{_ASCII_WORD})(?!{_ASCII_WORD}))"
_FLAG_GROUP = re.compile(r"\(\?([imsU]*)(?:-([imsU]*))?(\)|:)")


class _Frame:
    """One group level while translating: flags RE2 applies from (?flags) to the group's end."""

    def __init__(self, multiline: bool) -> None:
        self.multiline = multiline
        self.closes = 0
        self.reopen: list[str] = []


def _translate_re2(pattern: str) -> Optional[str]:
    """Rewrite RE2 syntax into an equivalent Python pattern; None if unsupported.

    Differences handled: ASCII-only \\d \\w \\s \\b and POSIX classes, \\pX
    categories, \\Q...\\E, \\z, ``$`` meaning end of text, flags in the middle
    of a pattern (scoped to the enclosing group in RE2), repeated empty-width
    assertions, and literal braces that start no repeat.
    """
    out: list[str] = []
    frames = [_Frame(False)]
    i, n = 0, len(pattern)
    in_class = False
    assertion_end = -1  # index in `out` just after an empty-width assertion

    pending: list[str] = []  # (?flags) not yet opened: a following repeat binds to the atom before
    opener_end = 0  # len(out) right after a group opener or "|": nothing there to repeat

    def flush() -> None:
        nonlocal opener_end
        frame = frames[-1]
        for spec in pending:
            out.append(f"(?{spec}:")
            frame.closes += 1
            frame.reopen.append(spec)
        if pending:
            opener_end = len(out)
        pending.clear()

    def assertion(text: str) -> None:
        nonlocal assertion_end
        flush()
        out.append(text)
        assertion_end = len(out)

    while i < n:
        ch = pattern[i]
        if not in_class and ch in "*+?{":
            if ch != "{" or _REPEAT.match(pattern, i):
                if not out or opener_end == len(out):
                    return None  # RE2: missing argument to repetition operator
                if assertion_end == len(out):
                    # RE2 lets an assertion be repeated; Python only a group
                    out[-1] = f"(?:{out[-1]})"
                    assertion_end = -1
        elif not in_class and not (ch == "(" and _FLAG_GROUP.match(pattern, i) and
                                   _FLAG_GROUP.match(pattern, i).group(3) == ")"):
            flush()
        if ch == "\\" and i + 1 < n:
            nxt = pattern[i + 1]
            if nxt in "pP":
                negate = nxt == "P"
                if i + 2 < n and pattern[i + 2] == "{":
                    close = pattern.find("}", i + 3)
                    if close < 0:
                        return None
                    name = pattern[i + 3:close]
                    i = close + 1
                elif i + 2 < n:
                    name = pattern[i + 2]
                    i += 3
                else:
                    return None
                if name.startswith("^"):
                    negate, name = not negate, name[1:]
                body = _category_body(name, negate)
                if body is None:
                    return None
                if not in_class:
                    flush()
                out.append(body if in_class else f"[{body}]")
                continue
            if nxt in "dwsDWS":
                body = _PERL_CLASSES[nxt.lower()]
                if nxt.isupper():
                    # inside a class Python's own \\D is the closest spelling
                    out.append(f"\\{nxt}" if in_class else f"[^{body}]")
                else:
                    out.append(body if in_class else f"[{body}]")
                i += 2
                continue
            if in_class and nxt in "bBAzQE":
                return None  # RE2 has no such escape inside a class
            if not in_class and nxt in "bBAz":
                assertion({"b": _WORD_BOUNDARY, "B": _NOT_WORD_BOUNDARY, "A": "\\A", "z": "\\Z"}[nxt])
                i += 2
                continue
            if nxt == "Q":
                end = pattern.find("\\E", i + 2)
                literal = pattern[i + 2:] if end < 0 else pattern[i + 2:end]
                out.append(re.escape(literal))
                i = n if end < 0 else end + 2
                continue
            if nxt == "Z":
                return None  # not RE2 syntax
            out.append(pattern[i:i + 2])
            i += 2
            continue
        if in_class:
            if ch == "[" and pattern.startswith("[:", i):
                close = pattern.find(":]", i + 2)
                if close > 0:
                    name = pattern[i + 2:close]
                    body = _POSIX_CLASSES.get(name.lstrip("^"))
                    if body is None or name.startswith("^"):
                        return None
                    out.append(body)
                    i = close + 2
                    continue
            if ch == "]" and not (out and out[-1] in ("[", "[^")):
                in_class = False
            elif ch == "[":
                out.append("\\[")
                i += 1
                continue
            out.append(ch)
            i += 1
            continue
        frame = frames[-1]
        if ch == "[":
            in_class = True
            if pattern.startswith("[^", i):
                out.append("[^")
                i += 2
            else:
                out.append("[")
                i += 1
            continue
        if ch == "(":
            m = _FLAG_GROUP.match(pattern, i)
            if m is not None:
                on, off, kind = m.group(1), m.group(2) or "", m.group(3)
                if "U" in on + off or (not on and not off):
                    return None
                multiline = (frame.multiline or "m" in on) and "m" not in off
                spec = on + (f"-{off}" if off else "")
                i = m.end()
                if kind == ":":
                    out.append(f"(?{spec}:")
                    frames.append(_Frame(multiline))
                    opener_end = len(out)
                else:
                    # RE2 makes no node for (?flags); open the scope lazily
                    pending.append(spec)
                    frame.multiline = multiline
                continue
            out.append("(")
            frames.append(_Frame(frame.multiline))
            opener_end = len(out)
            i += 1
            if pattern.startswith("?", i) and not pattern.startswith("?P<", i) and not pattern.startswith("?:", i):
                return None  # (?=, (?<... and other Perl-only groups
            continue
        if ch == ")":
            if len(frames) == 1:
                return None  # unbalanced: RE2 rejects it
            out.append(")" * frame.closes + ")")
            frames.pop()
            i += 1
            continue
        if ch == "|":
            out.append(")" * frame.closes + "|" + "".join(f"(?{spec}:" for spec in frame.reopen))
            opener_end = len(out)
            i += 1
            continue
        if ch == "^":
            assertion("^" if frame.multiline else "\\A")
            i += 1
            continue
        if ch == "$":
            assertion("$" if frame.multiline else "\\Z")
            i += 1
            continue
        if ch == "{":
            m = _REPEAT.match(pattern, i)
            if m is None:
                out.append("\\{")  # RE2 reads a brace that starts no repeat literally
                i += 1
                continue
            if int(m.group(1)) > _RE2_MAX_REPEAT or (m.group(2) and int(m.group(2)) > _RE2_MAX_REPEAT):
                return None
            out.append(m.group(0))
            i = m.end()
            continue
        out.append(ch)
        i += 1
    if in_class or len(frames) != 1:
        return None
    flush()
    out.append(")" * frames[0].closes)
    return "".join(out)


def compile_go_regex(pattern: str) -> "Optional[re.Pattern[str]]":
    """Compile a Go RE2 pattern with Python's engine, or None if RE2 would reject it."""
    if _RE2_UNSUPPORTED.search(pattern):
        return None
    translated = _translate_re2(pattern)
    if translated is None:
        return None
    try:
        return re.compile(translated)
    except (re.error, OverflowError, RecursionError):
        return None


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
        value = self.value(allow_alt_quotes=(op == OP_MATCHES))
        return Selector(tuple(path), op, value)

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

    def value(self, allow_alt_quotes: bool) -> str:
        pos, kind, text = self.scanner.scan()
        if kind in (TOKEN_VALUE, TOKEN_FIELD):
            return _text(text)
        if kind == TOKEN_QUOTED:
            return self.unquote(pos, text, allow_alt_quotes)
        if kind == TOKEN_ILLEGAL:
            raise self.mkerr(pos, self.scanner.err)
        raise self.mkerr(pos, "expected value or quoted")

    def unquote(self, pos: int, text: bytes, allow_alts: bool) -> str:
        if not allow_alts and text[:1] not in (b"'", b'"'):
            raise self.mkerr(pos, "invalid quote encountered")
        try:
            return _text(_unquote(text))
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
    from ..errors import go_quote
    return go_quote(_text(text))


# Parsed filters by text. Clients repeat the same few filters (often with a
# regex whose translation and compilation cost far more than the List), and
# a parsed Filter is never changed by matching (a selector only fills in its
# own compiled regex, the same for every caller), so requests share them.
_PARSED: dict[str, Filter] = {}
_PARSED_MAX = 256


def parse(text: str) -> Optional[Filter]:
    """One filter string; None means "always matches" (the empty string)."""
    if text == "":
        return None
    cached = _PARSED.get(text)
    if cached is not None:
        return cached
    parsed = _Parser(text).parse()
    if parsed is not None:
        if len(_PARSED) >= _PARSED_MAX:
            _PARSED.clear()  # many distinct filters: start over rather than grow
        _PARSED[text] = parsed
    return parsed


def parse_all(texts: Sequence[str]) -> AnyFilter:
    """The request's filters (OR). Syntax errors raise InvalidArgument.

    containerd wraps the parse error with its invalid-argument kind twice
    (once in the filter package, once in the store), so its message ends in
    ``: invalid argument: invalid argument``; ours does too.
    """
    out: list[Filter] = []
    for text in texts:
        try:
            parsed = parse(text)
        except FilterSyntaxError as exc:
            raise InvalidArgument(f"{exc}: invalid argument") from None
        out.append(parsed if parsed is not None else Filter([]))
    return AnyFilter(out)
