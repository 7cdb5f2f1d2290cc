"""containerd's filter language: syntax errors (text confirmed against
containerd 1.6.20's Images.List) and matching semantics."""

from __future__ import annotations

import pytest

from boltimages.errors import InvalidArgument
from boltimages.store.filters import parse_all
from boltimages.store.image_records import from_image
from boltimages.store.images import Descriptor, Image

D = "sha256:" + "2d" * 32

# status message of Images.List from containerd 1.6.20 for each filter
CONTAINERD_MESSAGES = {
    "name==a b": "filters: parse error: [name==a >| |< b]: unexpected input:  ",
    "name==": "filters: parse error: [name==]: expected value or quoted",
    "(": "filters: parse error: [ >|(|< ]: expected field or quoted",
    "name=~x": 'filters: parse error: [name >|=|< ~x]: unsupported operator "=~"',
    "name!": 'filters: parse error: [name >|!|< ]: unsupported operator "!"',
    "name===x": 'filters: parse error: [name >|=|< ==x]: unsupported operator "==="',
    'name=="unterminated': 'filters: parse error: [name== >|"|< unterminated]: quoted literal not terminated',
    "name==|x|": "filters: parse error: [name== >|||< x|]: invalid quote encountered",
    "name,": "filters: parse error: [name,]: expected field or quoted",
    ",name": "filters: parse error: [ >|,|< name]: expected field or quoted",
    "name==x,": "filters: parse error: [name==x,]: expected field or quoted",
    "name==\x00": "filters: parse error: [name== >|\x00|< ]: unexpected null",
    # byte offsets: containerd cuts the UTF-8 of "é" in half
    "n\u00e9me": 'filters: parse error: [n >|\ufffd|< \ufffdme]: expected an operator ("=="|"!="|"~=")',
}


@pytest.mark.parametrize("text", sorted(CONTAINERD_MESSAGES))
def test_syntax_errors_match_containerd(text: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        parse_all([text])
    assert str(info.value) == CONTAINERD_MESSAGES[text] + ": invalid argument: invalid argument"


def _adaptor(image: Image):
    """The record module's filter adaptor over the record ``image`` is stored as."""
    return from_image(image).lookup

def make(name: str, labels=None, annotations=None, digest: str = D,
         media_type: str = "application/vnd.oci.image.manifest.v1+json") -> Image:
    return Image(name=name, labels=labels,
                 target=Descriptor(media_type=media_type, digest=digest, size=1, annotations=annotations))


IMAGES = [
    make("docker.io/library/x:1", {"c": "d", "a.b": "dotted"}, {"org.opencontainers.image.ref.name": "1"}),
    make("docker.io/library/y:2", {"c": "e"}, digest="sha256:" + "ab" * 32,
         media_type="application/vnd.oci.image.index.v1+json"),
    make("example.com/z", None),
]


def names(*filters: str) -> list[str]:
    matcher = parse_all(list(filters))
    return [i.name for i in IMAGES if matcher.match(_adaptor(i))]


@pytest.mark.parametrize("filters,expected", [
    ((), ["docker.io/library/x:1", "docker.io/library/y:2", "example.com/z"]),
    (("",), ["docker.io/library/x:1", "docker.io/library/y:2", "example.com/z"]),
    (("name==docker.io/library/x:1",), ["docker.io/library/x:1"]),
    (('name=="example.com/z"',), ["example.com/z"]),
    (("labels.c",), ["docker.io/library/x:1", "docker.io/library/y:2"]),
    (("labels.c==d",), ["docker.io/library/x:1"]),
    (('labels."a.b"==dotted',), ["docker.io/library/x:1"]),
    (("labels.a.b==dotted",), ["docker.io/library/x:1"]),  # joined with "."
    # != matches images without the label too (containerd does no presence check)
    (("labels.c!=d",), ["docker.io/library/y:2", "example.com/z"]),
    (("name~=library",), ["docker.io/library/x:1", "docker.io/library/y:2"]),
    (("name~=/^example/",), ["example.com/z"]),
    (("name~=|:[0-9]$|",), ["docker.io/library/x:1", "docker.io/library/y:2"]),
    (("name~=[",), []),  # bad regex: no match, not an error
    (("target.mediatype~=index",), ["docker.io/library/y:2"]),
    (("target.digest==" + D,), ["docker.io/library/x:1", "example.com/z"]),
    (("annotations.org.opencontainers.image.ref.name==1",), ["docker.io/library/x:1"]),
    (("labels.c==d,name~=x",), ["docker.io/library/x:1"]),
    (("labels.c==d,name~=example",), []),
    (("labels.c==d", "name==example.com/z"), ["docker.io/library/x:1", "example.com/z"]),
    (("target",), []),
    (("a.b.c",), []),
    (("name == example.com/z",), ["example.com/z"]),  # spaces before operator/value are skipped
])
def test_matching(filters, expected) -> None:
    assert names(*filters) == expected


def test_quoted_values_and_escapes() -> None:
    img = make("a", {"k": 'x"y\tz'})
    matcher = parse_all(['labels.k=="x\\"y\\tz"'])
    assert matcher.match(_adaptor(img))
    assert parse_all(['labels.k~=/x"y/']).match(_adaptor(img))
    with pytest.raises(InvalidArgument, match="illegal escape sequence|unquoting failed"):
        parse_all(['labels.k=="\\q"'])


from hypothesis import given, settings, strategies as st  # noqa: E402

_ALPHABET = st.sampled_from(list("name.labels=!~\"'/|\\,  \t\x00abc09_-:[](){}*+?^$é\ufffd\u2028"))


@settings(max_examples=400, deadline=None)
@given(st.lists(st.text(_ALPHABET, max_size=24), max_size=3))
def test_parser_never_crashes(filters) -> None:
    """Any input either parses or is InvalidArgument; matching never raises."""
    try:
        matcher = parse_all(filters)
    except InvalidArgument as exc:
        assert str(exc).startswith("filters: parse error: [")
        return
    for image in IMAGES:
        assert matcher.match(_adaptor(image)) in (True, False)


# --- regular expressions: RE2 itself (google-re2), as Go's regexp ----------

def test_catastrophic_backtracking_pattern_answers_correctly() -> None:
    """``(a+)+$`` against 27 a's and a '!' took 13 s on Python's backtracking
    ``re``; RE2 is linear. The test asserts the answers (the call returning
    at all is the point; the time is in the commit that added RE2)."""
    img = make("x", {"x": "a" * 27 + "!"})
    assert not parse_all(["labels.x~=(a+)+$"]).match(_adaptor(img))
    assert parse_all(["labels.x~=(a+)+!$"]).match(_adaptor(img))
    long = make("y", {"x": "a" * 3000 + "!"})
    assert not parse_all(["labels.x~=(a*)*(a+)+$"]).match(_adaptor(long))


def test_unicode_scripts_and_classes() -> None:
    img = make("x", {"g": "\u03b1\u03b2\u03b3", "l": "\u00e9t\u00e9"})
    assert parse_all(["labels.g~=^\\p{Greek}+$"]).match(_adaptor(img))
    assert not parse_all(["labels.l~=\\p{Greek}"]).match(_adaptor(img))
    assert parse_all(["labels.l~=^\\pL+$"]).match(_adaptor(img))
    assert not parse_all(["labels.l~=\\w\\w\\w"]).match(_adaptor(img))  # \w is ASCII in RE2 and Go


def test_stored_invalid_utf8_reads_as_one_replacement_per_byte() -> None:
    """Go's regexp reads each byte of invalid UTF-8 as U+FFFD; stored values
    reach the adaptor decoded with surrogateescape, one surrogate per byte."""
    img = make("x", {"b": b"a\xff\xfe".decode("utf-8", "surrogateescape")})
    assert parse_all(["labels.b~=^a\\x{FFFD}\\x{FFFD}$"]).match(_adaptor(img))
    assert parse_all(["labels.b~=^...$"]).match(_adaptor(img))
    assert not parse_all(["labels.b~=^..$"]).match(_adaptor(img))


@pytest.mark.parametrize("pattern, reason", [
    ("([", "missing ]"),
    ("(a", "missing )"),
    ("a++", "bad repetition operator"),
    ("a{1001}", "invalid repetition size"),
    ("\\C", "invalid escape sequence"),  # RE2 has \C (any byte); Go does not
    ("(?=a)", "invalid perl operator"),
    ("(a)\\1", "invalid escape sequence"),
])
def test_patterns_go_refuses(pattern: str, reason: str) -> None:
    """Matching nothing, as containerd answers (OK, no image); an error only when asked."""
    filters = [f"name~={pattern}"]
    assert names(*filters) == []
    assert parse_all(filters).regex_errors()
    with pytest.raises(InvalidArgument) as info:
        parse_all(filters, strict_regex=True)
    message = str(info.value)
    assert reason in message and "\n" not in message and "b'" not in message


def test_invalid_utf8_in_a_quoted_pattern_does_not_compile() -> None:
    """``"\\xff"`` unquotes to a lone byte: Go's regexp.Compile refuses invalid UTF-8."""
    matcher = parse_all(['name~="\\xff"'])
    assert matcher.regex_errors() == ['error parsing regexp "\ufffd": invalid UTF-8']
    assert names('name~="\\xff"') == []


def test_regex_in_slash_quotes_and_a_literal_backslash_c() -> None:
    assert names("name~=/^example/") == ["example.com/z"]
    assert not parse_all(["name~=\\Q\\C\\E"]).regex_errors()  # literal text, not an escape


def test_the_set_path_and_the_search_path_agree(monkeypatch) -> None:
    """Small programs answer through a one-pattern RE2::Set, larger ones
    through RE2's search: both must give the same yes/no everywhere."""
    import random

    from boltimages.store import filters as f

    rng = random.Random(16)
    pieces = ["a", "b", "(", ")", "|", "*", "+", "?", "^", "$", "\\pL", "\\p{Greek}", "[^a]", ".", "(?i)",
              "\\b", "{2}", "\\x{FFFD}", "\u03b1", "\\d", "(?s)", "(?m)", "\\z"]
    texts = [b"", b"a", b"ab\nba", "\u03b1\u03b2 A1".encode(), b"aaaaaaaaaaaaaaaaaaaaaaaaaaa!", b"\xff", "\ufffd".encode()]
    patterns = ["".join(rng.choice(pieces) for _ in range(rng.randint(1, 7))) for _ in range(400)]
    compiled = []
    for pattern in patterns:
        try:
            compiled.append((pattern, f.compile_regex(pattern)))
        except f.RegexError:
            continue
    monkeypatch.setattr(f.GoRegex, "_SET_MAX_PROGRAM", -1)
    checked = 0
    for pattern, fast in compiled:
        slow = f.compile_regex(pattern)
        for text in texts:
            assert f.regex_search_stored(fast, text) == f.regex_search_stored(slow, text), (pattern, text)
            checked += 1
    assert checked > 1000


def test_distinct_regex_filters_are_not_all_kept() -> None:
    """A compiled pattern holds RE2's DFA cache while it lives: the parsed
    filters with a regex that are kept between requests are few."""
    from boltimages.store import filters as f
    for i in range(200):
        parse_all([f"name~=^x{i}(a|b)*$"])
        parse_all([f"name==x{i}"])
    assert len(f._PARSED_REGEX) <= f._PARSED_REGEX_MAX
    assert all(any(s.compiled_regex() for s in kept.selectors) for kept in f._PARSED_REGEX.values())
    assert "name==x199" in f._PARSED and "name==x199" not in f._PARSED_REGEX  # plain ones: their own cache
