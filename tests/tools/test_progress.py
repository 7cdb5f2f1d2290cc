"""Progress on long commands: a bar (count, rate, ETA) on a terminal, nothing in a pipe or with
--quiet; summaries instead of a line per record unless --verbose.

The terminal is a real pty (os.openpty): the command sees isatty() true on stderr exactly
as in an interactive shell.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

import pytest

from tests.helpers import child_env
from tests.tools.conftest import write_jsonl

COUNT = 3000


def _jsonl(path, count=COUNT):
    docs = [{"kind": "boltimages-export", "version": 1, "dbVersion": 3}]
    for i in range(count):
        docs.append({"kind": "image", "namespace": "default", "name": f"example.com/p-{i:05d}:1",
                     "target": {"mediaType": "application/vnd.oci.image.manifest.v1+json",
                                "digest": "sha256:" + f"{i:064x}", "size": i + 1, "annotations": {}},
                     "labels": {}, "createdAt": "2024-01-01T00:00:00Z", "updatedAt": "2024-01-01T00:00:00Z"})
    return write_jsonl(path, *docs)


def _on_pty(*args: str) -> tuple[int, bytes, bytes]:
    """Run the CLI with stderr on a pty; returns (status, what the terminal got, stdout)."""
    master, slave = os.openpty()
    # stdout to a file, not a pipe: a pipe we do not drain while reading the pty would fill and
    # block the command
    out_file = tempfile.TemporaryFile()
    proc = subprocess.Popen([sys.executable, "-m", "boltimages.cli", *args], stderr=slave,
                            stdout=out_file, env=child_env())
    os.close(slave)
    seen = b""
    while True:  # read until the child closes the pty (EIO on Linux once the slave is gone)
        try:
            chunk = os.read(master, 65536)
        except OSError:
            break
        if not chunk:
            break
        seen += chunk
    os.close(master)
    rc = proc.wait(60)
    out_file.seek(0)
    out = out_file.read()
    out_file.close()
    return rc, seen, out


@pytest.fixture
def big_db(cli, tmp_path):
    db = tmp_path / "meta.db"
    res = cli("import", "--db", str(db), "-i", str(_jsonl(tmp_path / "in.jsonl")))
    assert res.rc == 0, res.stderr
    return db


@pytest.mark.parametrize("command, label", [
    (["ls"], b"ls ["), (["export", "-o", "{tmp}/x.jsonl"], b"export ["), (["check"], b"check ["),
    (["compact", "-o", "{tmp}/c.db"], b"compact ["),
    (["copy", "--to-namespace", "k8s.io", "--all", "--records-only", "--no-backup"], b"copy ["),
])
def test_bar_on_a_terminal_with_count_rate_and_eta(big_db, tmp_path, command, label):
    args = [a.format(tmp=tmp_path) for a in command]
    rc, seen, _ = _on_pty(args[0], "--db", str(big_db), *args[1:])
    assert rc == 0, seen
    assert label in seen, seen[-400:]
    bar = seen[seen.index(label):].split(b"\x1b[K")[0]
    assert b"%" in bar and b"/s" in bar and b"ETA" in bar, bar
    assert seen.count(b"\r\x1b[K") >= 1  # erased at the end: the terminal is left clean


def test_import_bar_and_summary(tmp_path):
    src = _jsonl(tmp_path / "in.jsonl")
    rc, seen, out = _on_pty("import", "--db", str(tmp_path / "n.db"), "-i", str(src))
    assert rc == 0
    bar = seen[seen.index(b"import ["):].split(b"\x1b[K")[0]
    assert f"/{COUNT + 1}".encode() in bar and b"ETA" in bar, bar
    # one summary line, not a line per image
    assert out == b""
    assert f"apply {COUNT + 1} change(s)".encode() in seen and f"add image x{COUNT}".encode() in seen
    assert seen.count(b"\n") == 2  # the summary and the warning that no content records came along


def test_quiet_on_a_terminal_draws_nothing(big_db, tmp_path):
    rc, seen, _ = _on_pty("export", "--db", str(big_db), "-o", str(tmp_path / "x.jsonl"), "--quiet")
    assert rc == 0 and seen == b"", seen


def test_nothing_drawn_in_a_pipe_and_verbose_lists_records(cli, tmp_path):
    src = _jsonl(tmp_path / "in.jsonl", 50)
    res = cli("import", "--db", str(tmp_path / "n.db"), "-i", str(src))
    assert res.rc == 0 and "\r" not in res.stderr and res.stdout == ""
    summary, warning = res.stderr.strip().splitlines()
    assert summary == "apply 51 change(s) (initialise file x1, add image x50)"
    assert warning.startswith("warning: 50 imported image(s) have no content record")
    res = cli("import", "--db", str(tmp_path / "v.db"), "-i", str(src), "--verbose")
    assert res.rc == 0 and len(res.stdout.splitlines()) == 51  # the file, then each image
    for command in (["ls"], ["check"], ["export"]):
        res = cli(command[0], "--db", str(tmp_path / "n.db"))
        assert res.rc == 0 and "\r" not in res.stderr and "\x1b" not in res.stderr, (command, res.stderr)


def test_inspect_reads_only_the_named_records(cli, big_db):
    """inspect NAME looks the name up; a name that is not there is reported, the others shown."""
    res = cli("inspect", "--db", str(big_db), "example.com/p-02999:1", "example.com/p-00000:1", "nope:1")
    assert res.rc == 1
    assert [d["name"] for d in json.loads(res.stdout)] == ["example.com/p-00000:1", "example.com/p-02999:1"]
    assert "image 'nope:1': not found" in res.stderr
