"""The `boltimages` command line without containerd: help, errors, exit codes, JSON times, dry runs.

Files here are made by the engine itself (import from JSON Lines), so these
tests run everywhere; the containerd- and bbolt-backed tests live next door.
"""

from __future__ import annotations

import json
import os

import pytest
from hypothesis import given, settings, strategies as st

from boltimages.store import codec
from boltimages.tools import records
from tests.tools.conftest import IMAGE

COMMANDS = ["serve", "ls", "inspect", "check", "compact", "export", "import", "copy", "tag", "rm", "label",
            "salvage"]

def test_top_level_help_lists_commands_and_exit_codes(cli):
    res = cli("--help")
    assert res.rc == 0
    for name in COMMANDS:
        assert name in res.stdout
    assert "exit codes" in res.stdout and "locked" in res.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(cli, command):
    res = cli(command, "--help")
    assert res.rc == 0, res.stderr
    assert res.stdout.startswith(f"usage: boltimages {command}")


def test_usage_error_exit_code(cli):
    assert cli("ls", "--no-such-flag").rc == 2
    assert cli("frobnicate").rc == 2


def test_missing_file_is_one_line(cli, tmp_path):
    for command in (["ls"], ["check"], ["export"], ["rm", "x"], ["compact", "-o", str(tmp_path / "o")]):
        res = cli(command[0], "--db", str(tmp_path / "absent.db"), *command[1:])
        assert res.rc == 1, (command, res.stderr)
        assert res.stderr.strip().count("\n") == 0 and "no such file" in res.stderr
        assert "Traceback" not in res.stderr
    assert not (tmp_path / "absent.db").exists()


def test_not_a_bolt_file(cli, tmp_path):
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"hello" * 5000)
    res = cli("ls", "--db", str(junk))
    assert res.rc == 1 and "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1
    res = cli("check", "--db", str(junk))
    assert res.rc == 4 and "structure: 1 problem" in res.stdout and "not checked" in res.stdout
    res = cli("salvage", "--db", str(junk), "-o", str(tmp_path / "out.db"))
    assert res.rc == 1 and "neither meta page is valid" in res.stderr
    assert not (tmp_path / "out.db").exists()


def test_roundtrip_export_is_exact(cli, small_db, tmp_path):
    res = cli("export", "--db", str(small_db))
    assert res.rc == 0
    lines = [json.loads(x) for x in res.stdout.splitlines()]
    assert lines[0] == {"kind": "boltimages-export", "version": 1, "dbVersion": 3}
    assert lines[1] == {"kind": "namespace", "namespace": "default", "labels": {"owner": "me"}}
    assert lines[2] == IMAGE
    # the JSON time decodes to the bytes Go would write for that instant and zone
    with __import__("boltimages.bolt", fromlist=["open"]).open(small_db, read_only=True) as db, db.begin() as tx:
        img = tx.bucket(b"v1").bucket(b"default").bucket(b"images").bucket(b"example.com/a:1")
        updated = codec.decode_time(img.get(b"updatedat"))
        assert updated.offset == 5 * 3600 + 30 * 60 and updated.nanos == 1
        assert img.bucket(b"target").get(b"size") == codec.encode_varint(1234)


def test_ls_namespaces(cli, small_db):
    res = cli("ls", "--db", str(small_db), "--namespaces")
    assert res.rc == 0
    assert res.stdout.splitlines()[1].split() == ["default", "owner=me"]


def test_dry_run_writes_nothing(cli, small_db, tmp_path):
    before = small_db.read_bytes()
    for command in (["rm", "example.com/a:1"], ["tag", "example.com/a:1", "b:2"],
                    ["label", "example.com/a:1", "team="], ["copy", "--to-namespace", "k8s.io", "--all",
                                                            "--content-root", str(tmp_path)]):
        res = cli(command[0], "--db", str(small_db), "--dry-run", *command[1:])
        assert res.rc == 0, (command, res.stderr)
        assert "would" in res.stdout + res.stderr, (res.stdout, res.stderr)
    res = cli("compact", "--db", str(small_db), "--in-place", "--dry-run")
    assert res.rc == 0 and "dry run" in res.stdout
    assert small_db.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["in.jsonl", "meta.db"]


def test_writing_keeps_a_backup_unless_told(cli, small_db, tmp_path):
    assert cli("tag", "--db", str(small_db), "example.com/a:1", "b:2").rc == 0
    backups = [n for n in os.listdir(tmp_path) if n.startswith("meta.db.bak-")]
    assert len(backups) == 1
    assert cli("tag", "--db", str(small_db), "--no-backup", "example.com/a:1", "b:3").rc == 0
    assert len([n for n in os.listdir(tmp_path) if n.startswith("meta.db.bak-")]) == 1
    names = cli("ls", "--db", str(small_db), "-q").stdout.split()
    assert names == ["b:2", "b:3", "example.com/a:1"]


def test_errors_are_one_line(cli, small_db, tmp_path):
    cases = [
        (["ls", "--filter", "name=="], "bad filter"),
        (["rm", "nope"], "not found"),
        (["tag", "nope", "x"], "not found"),
        (["tag", "example.com/a:1", "example.com/a:1"], "already exists"),
        (["label", "example.com/a:1", "novalue"], "KEY=VALUE"),
        (["compact"], "-o OUTPUT or --in-place"),
        (["copy", "--all"], "same namespace"),
        (["copy", "--to-namespace", "x"], "--filter or --all"),
    ]
    before = small_db.read_bytes()
    for args, text in cases:
        res = cli(args[0], "--db", str(small_db), *args[1:])
        assert res.rc == 1, (args, res.stderr)
        assert text in res.stderr and "Traceback" not in res.stderr, (args, res.stderr)
        assert len(res.stderr.strip().splitlines()) <= 2, res.stderr
    assert small_db.read_bytes() == before


def test_import_rejects_bad_lines_without_writing(cli, small_db, tmp_path):
    before = small_db.read_bytes()
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({**IMAGE, "name": "ok:1"}) + "\n{not json\n")
    res = cli("import", "--db", str(small_db), "-i", str(bad))
    assert res.rc == 1 and "line 2" in res.stderr
    bad.write_text(json.dumps({**IMAGE, "createdAt": "yesterday"}) + "\n")
    res = cli("import", "--db", str(small_db), "-i", str(bad))
    assert res.rc == 1 and "line 1" in res.stderr and "RFC 3339" in res.stderr
    assert small_db.read_bytes() == before


def test_check_reports_layout_problems(cli, small_db):
    from boltimages import bolt
    with bolt.open(small_db) as db, db.begin(write=True) as tx:
        img = tx.bucket(b"v1").bucket(b"default").bucket(b"images").bucket(b"example.com/a:1")
        img.put(b"createdat", b"\x09garbage")
        img.bucket(b"target").delete(b"digest")
    res = cli("check", "--db", str(small_db))
    assert res.rc == 4
    record = "v1/default/images/example.com/a:1"
    assert f"{record}: createdat: Time.UnmarshalBinary: unsupported version" in res.stdout
    assert f"{record}: target/digest: missing" in res.stdout


def test_no_progress_output_in_pipes(cli, small_db, tmp_path):
    res = cli("export", "--db", str(small_db), "-o", str(tmp_path / "x.jsonl"))
    assert "\r" not in res.stderr


# ---- JSON times: every encoding Go can write survives the round trip ----------

offsets = st.one_of(st.none(), st.integers(-18 * 3600, 18 * 3600).filter(lambda o: o // 60 != -1 or o % 60))


@settings(max_examples=300, deadline=None)
@given(seconds=st.integers(-62135596800 + 86400 * 2, 253402300799 - 86400 * 2),
       nanos=st.integers(0, 999_999_999), offset=offsets)
def test_time_json_round_trip(seconds, nanos, offset):
    if offset is not None and (offset // 60 if offset >= 0 else -(-offset // 60)) == -1:
        return  # -1 minute is Go's UTC marker and cannot be stored
    raw = codec.encode_time(codec.Timestamp(seconds, nanos, offset))
    text = records.time_to_json_safe(raw)
    assert text is not None
    assert records._time_from_doc(text) == raw
    if offset is None or offset >= 0 or offset % 60 == 0:
        assert not text.startswith("hex:"), text  # every ordinary time is readable RFC 3339


@given(data=st.binary(min_size=1, max_size=20))
def test_undecodable_times_survive_as_hex(data):
    text = records.time_to_json_safe(data)
    assert records._time_from_doc(text) == data


def test_progress_only_on_a_terminal(small_db, tmp_path):
    """With stderr on a terminal the progress line is drawn (and erased); pipes stay clean (above)."""
    import pty
    import subprocess
    import sys
    from tests.helpers import child_env
    master, slave = pty.openpty()
    env = child_env()
    proc = subprocess.run([sys.executable, "-m", "boltimages.cli", "export", "--db", str(small_db), "-o",
                           str(tmp_path / "x.jsonl")], stderr=slave, stdout=subprocess.DEVNULL, env=env,
                          timeout=60)
    os.close(slave)
    seen = b""
    try:
        while True:
            chunk = os.read(master, 4096)
            if not chunk:
                break
            seen += chunk
    except OSError:
        pass
    os.close(master)
    assert proc.returncode == 0
    assert b"\rexport" in seen and b"\x1b[K" in seen


def test_serve_unavailable_is_one_line(monkeypatch, capsys):
    """When the server cannot be imported (e.g. the engine was never built),
    `boltimages serve` says why in one line instead of a NameError traceback."""
    import sys

    from boltimages import cli

    monkeypatch.setitem(sys.modules, "boltimages.server.cli_serve", None)  # import now fails
    try:
        rc = cli.main(["serve"])
    except SystemExit as exit_:
        rc = exit_.code
    err = capsys.readouterr().err
    assert rc != 0
    assert "unavailable" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_version_prints_version_and_revision(cli):
    from boltimages.version import package_version

    res = cli("--version", env={"BOLTIMAGES_REVISION": "0123abcd"})
    assert res.rc == 0, res.stderr
    assert res.stdout == f"boltimages {package_version()} 0123abcd\n"
    assert res.stderr == ""


def test_version_without_packager_revision_names_the_checkout_or_unknown(cli):
    res = cli("--version", env={"BOLTIMAGES_REVISION": ""})
    assert res.rc == 0, res.stderr
    product, version, rev = res.stdout.split()
    assert product == "boltimages" and version
    # a git checkout gives its 40-hex HEAD, an installed copy "unknown"
    assert rev == "unknown" or (len(rev) == 40 and int(rev, 16) >= 0)


# --- one record module: the tools read, filter and write records as the store does

def _ls_names(cli, db, *filters):
    res = cli("ls", "--db", str(db), "-q", *[arg for f in filters for arg in ("--filter", f)])
    assert res.rc == 0, res.stderr
    return res.stdout.split()


def test_filters_pick_what_the_store_list_picks(cli, small_db):
    """The tools use the store's adaptor: annotations, labels, target fields,
    regexes; each filter picks the images the server's List returns."""
    from boltimages.store.db import MetadataDB
    from boltimages.store.images import ImageStore
    filters = ["annotations.org.opencontainers.image.ref.name==1", "annotations.nope", "labels.team==x",
               'labels."dotted.key/with"~=^v=', "target.mediatype~=manifest", "name~=^example\\.com/",
               "target.digest==sha256:" + "ab" * 32, "labels.team!=x"]
    with MetadataDB(str(small_db), read_only=True) as meta:
        store = ImageStore(meta)
        for text in filters:
            expected = [image.name for image in store.list("default", [text])]
            assert _ls_names(cli, small_db, text) == expected, text
    assert _ls_names(cli, small_db, "annotations.org.opencontainers.image.ref.name==1") == ["example.com/a:1"]


@pytest.mark.parametrize("text, reason", [("name~=([", "missing ]"), ("name~=\\C", "invalid escape"),
                                          ("name==a b", "unexpected input")])
def test_bad_filters_are_one_line_errors(cli, small_db, text, reason):
    for command in (["ls"], ["export"], ["copy", "--to-namespace", "other"]):
        res = cli(command[0], "--db", str(small_db), *command[1:], "--filter", text)
        assert res.rc == 1, (command, res.stdout)
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and reason in lines[0] and lines[0].startswith(f"boltimages {command[0]}: bad filter")
        assert "Traceback" not in res.stderr and "b'" not in res.stderr and "Error" not in lines[0]


def test_a_nested_bucket_in_labels_reads_as_an_empty_value(cli, small_db):
    """containerd's readMap (ForEach) gives a nested bucket a nil value, read
    as "": so do ls and the server, and a rewrite drops it, as containerd's does."""
    from boltimages import bolt
    with bolt.open(str(small_db)) as db:
        db.update(lambda tx: tx.bucket(b"v1").bucket(b"default").bucket(b"images").bucket(b"example.com/a:1")
                  .bucket(b"labels").create_bucket(b"nested").put(b"deep", b"x"))
    res = cli("ls", "--db", str(small_db), "--format", "json")
    assert res.rc == 0, res.stderr
    assert json.loads(res.stdout)["images"][0]["labels"]["nested"] == ""
    assert _ls_names(cli, small_db, "labels.nested") == ["example.com/a:1"]
    assert _ls_names(cli, small_db, 'labels.nested==""') == ["example.com/a:1"]  # present, value ""
    res = cli("label", "--db", str(small_db), "example.com/a:1", "team=y")
    assert res.rc == 0, res.stderr
    with bolt.open(str(small_db), read_only=True) as db:
        labels = db.view(lambda tx: dict(tx.bucket(b"v1").bucket(b"default").bucket(b"images")
                                         .bucket(b"example.com/a:1").bucket(b"labels").items()))
    assert labels == {b"team": b"y", b"dotted.key/with": b"v=1"}


def test_engine_refusals_read_as_text(cli, small_db):
    """An engine refusal that reaches the command line (here an empty image
    name, which becomes an empty bucket name) is one line with neither the
    exception's class name nor a bytes repr."""
    res = cli("tag", "--db", str(small_db), "-n", "default", "example.com/a:1", "")
    assert res.rc == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("boltimages tag: ")
    assert "b'" not in lines[0] and "BucketNameRequired" not in lines[0] and "Error" not in lines[0]
