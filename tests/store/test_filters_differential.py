"""Filter language, differentially against a real containerd 1.6.20.

The same images are created in a private containerd and held in memory; a
fixed corpus plus seeded random filter strings are sent to containerd's
Images.List and evaluated by our parser/matcher. Status code and message
(errors) or the list of names (success) must be identical.
"""

from __future__ import annotations

import pathlib
import random

import grpc
import pytest

from boltimages.api.containerd.services.images.v1 import images_pb2 as pb, images_pb2_grpc
from boltimages.errors import InvalidArgument
from boltimages.store.filters import parse_all
from boltimages.store.image_records import from_image
from boltimages.store.images import Descriptor, Image
from tests.compat.daemons import DaemonError, containerd_daemon
from tests.helpers import require_root, require_tool, slow_budget

pytestmark = [pytest.mark.compat, pytest.mark.root]

MT = "application/vnd.oci.image.manifest.v1+json"
IDX = "application/vnd.oci.image.index.v1+json"
IMAGES = [
    Image("docker.io/library/alpine:3", {"a": "b", "x.y": "dot", "sp ace": "v v"},
          Descriptor(MT, "sha256:" + "ab" * 32, 10, {"ref": "3"})),
    Image("docker.io/library/busybox:latest", {"a": "c", "g": "\u03b1\u03b2\u03b3", "x": "a" * 27 + "!"},
          Descriptor(IDX, "sha256:" + "cd" * 32, 20)),
    Image("example.com/ns/app@sha256", None, Descriptor(MT, "sha512:" + "ef" * 64, 30, {"ref": "x,y"})),
    Image("q\"uote", {"\u00e9": "\u00fc"}, Descriptor(MT, "sha256:" + "01" * 32, 40)),
]

CORPUS = [
    "", "name", "name==docker.io/library/alpine:3", "name!=docker.io/library/alpine:3",
    "labels.a", "labels.a==b", "labels.a!=b", "labels.a~=^[bc]$", "labels.x.y==dot", 'labels."x.y"==dot',
    'labels."sp ace"=="v v"', "labels.\"\u00e9\"==\u00fc", "annotations.ref==3", 'annotations.ref=="x,y"',
    "target.digest~=^sha512:", "target.mediatype~=index", "target", "target.size==10", "nope",
    "name~=/library/", "name~=|^q|", 'name=="q\\"uote"', "name~=\"\\\\d\"", "name~=[", "name~=(",
    "name==a b", "name==", "(", ",", ".", "name.", "name..a", "name,labels.a", "name==x,", "=", "==x",
    "name=~x", "name~~x", "name!!x", "name==\"\\q\"", "name==\"\\x4\"", 'name=="\\u00e9"', "name~=/\\//",
    "labels.a==b,labels.a==c", "  name  ", "name ==  x", "name\t==x", "na-me==x", "_==x", "9==x",
    "\u00e9==x", "name==\u00e9", "name==\x00", "name==\"a\nb\"", "labels.a==b\u00a0", "name==\ufffd",
    "name~=\\z", "name~=a{2}", "name~=(?i)ALPINE", "name~=\\pL", "name~='q'",
    # RE2 itself (google-re2) against Go's regexp: Unicode scripts, \C (Go has
    # none), the catastrophic backtracking case, flags, hex escapes, bad UTF-8
    "labels.g~=^\\p{Greek}+$", "labels.g~=\\P{Greek}", "name~=\\C", "labels.x~=(a+)+$",
    "labels.x~=(a+)+!$", "name~=(?U)a+", "name~=\\x{61}", "labels.g~=[^\\n]", "name~=\\Q.\\E",
    'name~="\\xff"', "name~=a{1001}", "name~=\\Z", "name~=[[:^alpha:]]", "name~=(?s).",
]

PIECES = ["name", "labels", "annotations", "target", "digest", "mediatype", "a", "x", "y", "ref",
          ".", ",", "==", "!=", "~=", "=", "!", "~", " ", "\"", "\\", "/", "|", "'", "\u00e9",
          "b", "c", "3", "^", "$", "[", "]", "(", ")", "*", "+", "?", "{", "}", ":", "-", "_", "\t"]


REGEX_PIECES = ["\\d", "\\w", "\\s", "\\D", "\\pL", "\\p{Lu}", "\\PL", "[[:alpha:]]", "[^a]", "$", "^",
                "a{2}", "{", "}", "{1,}", "(?i)", "\\b", ".", "*", "+", "?", "|", "(", ")", "[", "]", "-",
                "\\Q.", "\\E", "\\z", "l", "i", "b", ":", "3", "\u00e9", "A", "\\", "(?m)", "(?s)",
                "\\p{Greek}", "\\C", "(?U)", "\\x{3b1}"]


def random_regex(rng: random.Random) -> list[str]:
    field = rng.choice(["name", "labels.a", "target.digest", "labels.\"\u00e9\"", "annotations.ref"])
    return [field + "~=" + "".join(rng.choice(REGEX_PIECES) for _ in range(rng.randint(1, 6)))]


def _adaptor(image: Image):
    """The record module's filter adaptor over the record ``image`` is stored as."""
    return from_image(image).lookup

def ours(filters: list[str]) -> tuple[str, object]:
    try:
        matcher = parse_all(filters)
    except InvalidArgument as exc:
        return "INVALID_ARGUMENT", str(exc)
    return "OK", [i.name for i in IMAGES if matcher.match(_adaptor(i))]


def random_filters(rng: random.Random) -> list[str]:
    return ["".join(rng.choice(PIECES) for _ in range(rng.randint(1, 8))) for _ in range(rng.randint(1, 2))]


def test_filters_match_containerd(tmp_path: pathlib.Path) -> None:
    require_root()
    daemon = containerd_daemon(require_tool("containerd"), tmp_path / "ctd")
    try:
        daemon.start()
    except DaemonError as exc:
        pytest.fail(str(exc), pytrace=False)
    md = [("containerd-namespace", "filters")]
    try:
        with grpc.insecure_channel(f"unix://{daemon.address}") as channel:
            stub = images_pb2_grpc.ImagesStub(channel)
            for image in IMAGES:
                msg = pb.Image(name=image.name)
                msg.labels.update(image.labels or {})
                msg.target.media_type, msg.target.digest = image.target.media_type, image.target.digest
                msg.target.size = image.target.size
                msg.target.annotations.update(image.target.annotations or {})
                stub.Create(pb.CreateImageRequest(image=msg), metadata=md, timeout=10)

            def theirs(filters: list[str]) -> tuple[str, object]:
                try:
                    resp = stub.List(pb.ListImagesRequest(filters=filters), metadata=md, timeout=10)
                except grpc.RpcError as exc:
                    return exc.code().name, exc.details()
                return "OK", sorted(i.name for i in resp.images)

            rng = random.Random(20261126)
            cases = [[f] for f in CORPUS] + [random_filters(rng) for _ in range(slow_budget(400))] \
                + [random_regex(rng) for _ in range(slow_budget(400))]
            mismatches = []
            for filters in cases:
                got, want = ours(filters), theirs(filters)
                if got[0] == "OK":
                    got = ("OK", sorted(got[1]))  # type: ignore[arg-type]
                if got != want:
                    mismatches.append((filters, got, want))
            assert not mismatches, f"{len(mismatches)} differ, e.g.:\n" + "\n".join(map(repr, mismatches[:40]))
    finally:
        daemon.stop()
