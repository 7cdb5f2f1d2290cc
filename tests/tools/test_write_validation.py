"""Offline writes refuse what containerd refuses: one line, exit 1, the file's bytes unchanged.

Files here are made by `import` alone (tests/tools/conftest.py small_db), so
these run everywhere; test_write_validation_containerd.py repeats the key
cases on a file a real containerd wrote and lets containerd read the result.
"""

from __future__ import annotations

import copy
import json
import re

import pytest

from boltimages import bolt, errors
from tests.tools.conftest import IMAGE, file_sha256, write_jsonl

LONG_NS = "n" * 100
BIG_LABEL = "v" * 5000


def _image(**changes):
    doc = copy.deepcopy(IMAGE)
    doc["name"] = "example.com/new:1"
    for key, value in changes.items():
        if key.startswith("target."):
            doc["target"][key[len("target."):]] = value
        elif value is None:
            doc.pop(key, None)
        else:
            doc[key] = value
    return doc


def _one_line_refusal(res, *expected: str) -> None:
    assert res.rc == 1, (res.stdout, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    for text in expected:
        assert text in lines[0], lines[0]
    assert lines[0].endswith("; nothing written"), lines[0]


#: (record to import, what the one-line refusal must say)
BAD_IMAGES = {
    "digest": (_image(**{"target.digest": "notadigest"}),
               'Target.Digest "notadigest" invalid: invalid checksum digest format'),
    "negative size": (_image(**{"target.size": -5}), "Target.Size must be greater than zero"),
    "zero size": (_image(**{"target.size": 0}), "Target.Size must be greater than zero"),
    "no media type": (_image(**{"target.mediaType": ""}), "Target.MediaType must be set"),
    "no target": (_image(target=None), 'Target.Digest "" invalid'),
    "oversized label": (_image(labels={"k": BIG_LABEL}),
                        "image.Labels: label key and value length (5001 bytes) greater than maximum size (4096 bytes), key: k"),
    "bad namespace": (_image(namespace="Bad NS"), 'identifier "Bad NS" must match'),
    "long namespace": (_image(namespace=LONG_NS), "greater than maximum length (76 characters)"),
    "garbled time": (_image(createdAt="hex:0900"), "createdAt: Time.UnmarshalBinary: unsupported version"),
    "the issue's record": (_image(**{"target.digest": "notadigest", "target.size": -5}, createdAt=None),
                           'Target.Digest "notadigest" invalid'),
}


@pytest.mark.parametrize("case", sorted(BAD_IMAGES))
def test_import_refuses_what_containerd_refuses(cli, small_db, tmp_path, case):
    doc, expected = BAD_IMAGES[case]
    before = file_sha256(small_db)
    src = write_jsonl(tmp_path / "bad.jsonl", IMAGE | {"name": "example.com/ok:1"}, doc)
    res = cli("import", "--db", str(small_db), "-i", str(src))
    # line 2: the valid record before it is not written either
    _one_line_refusal(res, "line 2: ", expected)
    assert file_sha256(small_db) == before
    assert not list(tmp_path.glob("meta.db.bak-*"))


@pytest.mark.parametrize("namespace,expected", [
    ("Bad NS", 'identifier "Bad NS" must match'),
    (LONG_NS, "greater than maximum length (76 characters)"),
    ("a--b", 'identifier "a--b" must match'),
])
def test_namespace_flags_are_validated(cli, small_db, tmp_path, namespace, expected):
    before = file_sha256(small_db)
    src = write_jsonl(tmp_path / "in.jsonl", IMAGE)
    _one_line_refusal(cli("import", "--db", str(small_db), "-n", namespace, "-i", str(src)),
                      "--namespace: namespace validation: ", expected)
    _one_line_refusal(cli("copy", "--db", str(small_db), "--to-namespace", namespace, "--all"),
                      "--to-namespace: namespace validation: ", expected)
    assert file_sha256(small_db) == before


def test_namespace_record_with_oversized_label_is_refused(cli, small_db, tmp_path):
    before = file_sha256(small_db)
    src = write_jsonl(tmp_path / "in.jsonl", {"kind": "namespace", "namespace": "default",
                                              "labels": {"k": BIG_LABEL}})
    _one_line_refusal(cli("import", "--db", str(small_db), "-i", str(src)),
                      "line 1: namespace default: namespace.Labels: label key and value length (5001 bytes) greater than maximum size")
    assert file_sha256(small_db) == before


def test_label_and_tag_refuse_what_containerd_refuses(cli, small_db):
    before = file_sha256(small_db)
    name = IMAGE["name"]
    _one_line_refusal(cli("label", "--db", str(small_db), name, f"k={BIG_LABEL}"),
                      "image.Labels: label key and value length (5001 bytes) greater than maximum size (4096 bytes), key: k")
    _one_line_refusal(cli("tag", "--db", str(small_db), name, ""), "image name must not be empty")
    assert file_sha256(small_db) == before
    # the boundary: key and value of exactly 4096 bytes together is containerd's maximum
    res = cli("label", "--db", str(small_db), name, "k=" + "v" * 4095)
    assert res.rc == 0, res.stderr


def test_tag_and_label_refuse_to_rewrite_an_image_containerd_would_refuse(cli, small_db):
    """A record that is already bad (written by something else) is not copied or relabelled:
    containerd's Create and Update would refuse the result too."""
    with bolt.open(small_db) as db, db.begin(write=True) as tx:
        target = tx.bucket(b"v1").bucket(b"default").bucket(b"images").bucket(IMAGE["name"].encode()) \
            .bucket(b"target")
        target.put(b"digest", b"notadigest")
    before = file_sha256(small_db)
    _one_line_refusal(cli("tag", "--db", str(small_db), IMAGE["name"], "example.com/b:1"),
                      'Target.Digest "notadigest" invalid')
    _one_line_refusal(cli("label", "--db", str(small_db), IMAGE["name"], "a=b"),
                      'Target.Digest "notadigest" invalid')
    # small_db has no content store beside it: the records alone are copied
    _one_line_refusal(cli("copy", "--db", str(small_db), "--to-namespace", "other", "--all", "--records-only"),
                      'Target.Digest "notadigest" invalid')
    assert file_sha256(small_db) == before


def test_import_fills_missing_times_as_create_would(cli, small_db, tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", _image(createdAt=None, updatedAt=None))
    res = cli("import", "--db", str(small_db), "-i", str(src))
    assert res.rc == 0, res.stderr
    out = cli("inspect", "--db", str(small_db), "example.com/new:1")
    [doc] = json.loads(out.stdout)
    assert doc["createdAt"] == doc["updatedAt"] and doc["createdAt"].endswith("Z")
    assert cli("check", "--db", str(small_db)).rc == 0
    # the same input again: the stored times are taken, so nothing changes
    before = file_sha256(small_db)
    again = cli("import", "--db", str(small_db), "-i", str(src))
    assert again.rc == 0, again.stderr
    assert file_sha256(small_db) == before


def _error_class_names() -> set[str]:
    import builtins
    names = {n for n, v in vars(builtins).items() if isinstance(v, type) and issubclass(v, BaseException)}
    for module in (bolt, errors):
        names |= {n for n, v in vars(module).items() if isinstance(v, type) and issubclass(v, BaseException)}
    from boltimages.store import codec, filters
    from boltimages.tools import common
    names |= {"CodecError", "FilterSyntaxError", "ToolError"}
    assert {codec.CodecError.__name__, filters.FilterSyntaxError.__name__, common.ToolError.__name__} <= names
    return names


def test_no_class_names_or_bytes_reprs_reach_the_user(cli, small_db, tmp_path):
    """Bad input of every kind: the answer is one line of text, never b'...' or an exception's name."""
    name = IMAGE["name"]
    db = str(small_db)
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"\x00" * 8192)
    bad_json = tmp_path / "bad.jsonl"
    bad_json.write_text('{"kind": "image", "namespace": "default"\n')
    odd = write_jsonl(tmp_path / "odd.jsonl", _image(**{"target.size": "many"}),)
    runs = [
        ("tag", "--db", db, name, ""),
        ("tag", "--db", db, "missing", "x"),
        ("label", "--db", db, name, f"k={BIG_LABEL}"),
        ("label", "--db", db, name, "novalue"),
        ("rm", "--db", db, ""),
        ("rm", "--db", db, "missing"),
        ("copy", "--db", db, "--to-namespace", "Bad NS", "--all"),
        ("import", "--db", db, "-n", "Bad NS", "-i", str(bad_json)),
        ("import", "--db", db, "-i", str(bad_json)),
        ("import", "--db", db, "-i", str(odd)),
        ("inspect", "--db", db, "missing"),
        ("ls", "--db", str(garbage)),
        ("check", "--db", str(tmp_path / "absent.db")),
        ("export", "--db", db, "-f", "name=="),
    ]
    classes = _error_class_names()
    word = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
    for args in runs:
        res = cli(*args)
        assert res.rc != 0, args
        text = res.stdout + res.stderr
        assert "b'" not in text and 'b"' not in text, (args, text)
        assert "Traceback" not in text, (args, text)
        leaked = set(word.findall(text)) & classes
        assert not leaked, (args, leaked, text)
        assert len(res.stderr.strip().splitlines()) == 1, (args, res.stderr)


def test_check_names_every_record_containerd_would_refuse_or_misread(cli, small_db):
    """Records written underneath the tools (as a buggy writer or an old tool would):
    each is reported with its bucket path, and check exits 4."""
    with bolt.open(small_db) as db, db.begin(write=True) as tx:
        v1 = tx.bucket(b"v1")
        images = v1.bucket(b"default").bucket(b"images")
        img = images.bucket(IMAGE["name"].encode())
        img.bucket(b"labels").put(b"big", BIG_LABEL.encode())
        img.put(b"createdat", b"")
        img.bucket(b"target").put(b"digest", b"notadigest")
        img.bucket(b"target").put(b"size", bytes([9]))  # zig-zag -5
        img.bucket(b"annotations").create_bucket(b"nested")
        no_target = images.create_bucket(b"no-target")
        no_target.put(b"target", b"a value")
        images.put(b"plain", b"a value")
        bad_ns = v1.create_bucket(b"Bad NS")
        bad_ns.create_bucket(b"labels").put(b"k", b"v" * 4096)
        v1.create_bucket(LONG_NS.encode())
        lease = v1.bucket(b"default").create_bucket(b"leases").create_bucket(b"l1")
        lease.put(b"createdat", b"\x01short")
    res = cli("check", "--db", str(small_db))
    assert res.rc == 4, res.stdout + res.stderr
    record = f"v1/default/images/{IMAGE['name']}"
    expected = [
        f"{record}: createdat: Time.UnmarshalBinary: no data",
        f"{record}: labels/big: image.Labels: label key and value length (5003 bytes) greater than maximum size (4096 bytes)",
        f'{record}: target/digest: "notadigest" invalid: invalid checksum digest format',
        f"{record}: target/size: -5: must be greater than zero",
        f"{record}: annotations/nested: a bucket where containerd expects a value",
        "v1/default/images/no-target: createdat: missing",
        "v1/default/images/no-target: target: a value: containerd cannot read the image",
        "v1/default/images/plain: a value where containerd expects an image bucket",
        'v1/"Bad NS": namespace validation: identifier "Bad NS" must match',
        'v1/"Bad NS"/labels/k: namespace.Labels: label key and value length (4097 bytes) greater than maximum size',
        f"v1/{LONG_NS}: namespace validation: identifier",
        "v1/default/leases/l1: createdat: Time.UnmarshalBinary: invalid length",
    ]
    lines = res.stdout.splitlines()
    for text in expected:
        assert any(text in line for line in lines), (text, res.stdout)
    assert f"containerd layout: {len(expected) + 1} problem(s)" in res.stdout  # + no-target's updatedat


def test_compact_keeps_records_check_flags(cli, small_db, tmp_path):
    """A record containerd would refuse is check's finding, not a failed compaction:
    the copy holds it byte for byte, as the source did."""
    with bolt.open(small_db) as db, db.begin(write=True) as tx:
        img = tx.bucket(b"v1").bucket(b"default").bucket(b"images").bucket(IMAGE["name"].encode())
        img.bucket(b"labels").put(b"big", BIG_LABEL.encode())
    res = cli("compact", "--db", str(small_db), "-o", str(tmp_path / "out.db"))
    assert res.rc == 0, res.stdout + res.stderr
    assert cli("check", "--db", str(tmp_path / "out.db")).rc == 4


def test_import_help_says_what_is_checked_and_how_times_are_filled(cli):
    text = " ".join(cli("import", "--help").stdout.split())
    assert "must pass containerd's own checks" in text and "nothing is written" in text
    assert "createdAt/updatedAt is stamped with the time of the import" in text


def test_label_of_an_image_without_createdat_writes_what_containerd_update_writes(cli, small_db):
    """containerd reads a missing createdat as Go's zero time and its Update writes that back:
    label does the same instead of refusing or leaving the key out."""
    with bolt.open(small_db) as db, db.begin(write=True) as tx:
        tx.bucket(b"v1").bucket(b"default").bucket(b"images").bucket(IMAGE["name"].encode()).delete(b"createdat")
    res = cli("label", "--db", str(small_db), "--no-backup", IMAGE["name"], "a=b")
    assert res.rc == 0, res.stderr
    [doc] = json.loads(cli("inspect", "--db", str(small_db), IMAGE["name"]).stdout)
    assert doc["createdAt"] == "0001-01-01T00:00:00.000000000Z" and doc["labels"]["a"] == "b"
    assert "problems" not in doc
    assert cli("check", "--db", str(small_db)).rc == 0


def test_inspect_names_problems_in_validations_words(cli, small_db):
    with bolt.open(small_db) as db, db.begin(write=True) as tx:
        target = tx.bucket(b"v1").bucket(b"default").bucket(b"images").bucket(IMAGE["name"].encode()) \
            .bucket(b"target")
        target.put(b"digest", b"notadigest")
    [doc] = json.loads(cli("inspect", "--db", str(small_db), IMAGE["name"]).stdout)
    assert doc["problems"] == ['target/digest: "notadigest" invalid: invalid checksum digest format']
