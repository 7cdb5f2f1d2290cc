"""Offline writes on a file a real containerd 1.6 wrote: what containerd refuses is refused
(file bytes unchanged), and what is accepted at the limits is listed and labelled by
containerd itself afterwards.

Before validation ran on these paths, each refused case below exited 0 and left
the node worse: containerd failed `ctr images ls` for the whole namespace
(Time.UnmarshalBinary: no data), or could neither list nor remove a
namespace named against its identifier rule.
"""

from __future__ import annotations

import copy

import pytest

from tests.compat.ctr_runner import table_rows
from tests.tools.conftest import ctr_on, file_sha256, write_jsonl

pytestmark = pytest.mark.compat

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
NS_76 = "n" * 76


def _record(namespace: str, name: str, **target) -> dict:
    doc = {"kind": "image", "namespace": namespace, "name": name,
           "target": {"mediaType": MANIFEST, "digest": "sha256:" + "5e" * 32, "size": 512}}
    doc["target"].update(target)
    return doc


def test_refused_writes_leave_a_containerd_file_unchanged(cli, root, tmp_path, start_containerd):
    db = str(root.db)
    before = file_sha256(root.db)
    issue = _record("default", "example.com/bad:1", digest="notadigest", size=-5)  # and no createdAt
    no_target = _record("default", "example.com/bad:2")
    del no_target["target"]
    good = _record("default", "example.com/good:1")
    cases = [
        (("import", "--db", db, "-i", str(write_jsonl(tmp_path / "a.jsonl", good, issue))),
         'line 2: image default/example.com/bad:1: Target.Digest "notadigest" invalid'),
        (("import", "--db", db, "-i", str(write_jsonl(tmp_path / "b.jsonl", no_target))),
         'line 1: image default/example.com/bad:2: Target.Digest "" invalid'),
        (("import", "--db", db, "-n", "Bad NS", "-i", str(write_jsonl(tmp_path / "c.jsonl", good))),
         'identifier "Bad NS" must match'),
        (("import", "--db", db, "-n", "n" * 100, "-i", str(tmp_path / "c.jsonl")),
         "greater than maximum length (76 characters)"),
        (("copy", "--db", db, "--to-namespace", "Bad NS", "--content-root", str(root.content), "--all"),
         'identifier "Bad NS" must match'),
        (("label", "--db", db, "docker.io/library/beta:2", "k=" + "v" * 5000),
         "label key and value length (5001 bytes) greater than maximum size (4096 bytes)"),
        (("tag", "--db", db, "docker.io/library/beta:2", ""), "image name must not be empty"),
    ]
    for args, expected in cases:
        res = cli(*args)
        assert res.rc == 1, (args, res.stdout, res.stderr)
        [line] = res.stderr.strip().splitlines()
        assert expected in line and line.endswith("; nothing written"), (args, line)
        assert file_sha256(root.db) == before, args
    # and containerd still serves every namespace of the file
    daemon = start_containerd(root)
    for ns in ("default", "other"):
        assert table_rows(ctr_on(daemon, ns, "images", "ls"))


def test_accepted_limits_are_listed_and_labelled_by_containerd(cli, root, tmp_path, start_containerd):
    db = str(root.db)
    # no times (import stamps them as Create would), a 76-byte namespace, a label of exactly 4096 bytes
    limit_label = {"k": "v" * 4095}
    doc = copy.deepcopy(_record(NS_76, "example.com/limits:1"))
    doc["labels"] = limit_label
    res = cli("import", "--db", db, "-i", str(write_jsonl(tmp_path / "in.jsonl", doc)))
    assert res.rc == 0, res.stderr
    res = cli("label", "--db", db, "docker.io/library/beta:2", "big=" + "v" * 4092)
    assert res.rc == 0, res.stderr
    res = cli("copy", "--db", db, "--to-namespace", NS_76, "--content-root", str(root.content),
              "docker.io/library/beta:2")
    assert res.rc == 0, res.stderr
    assert cli("check", "--db", db).rc == 0

    daemon = start_containerd(root)
    rows = {row[0]: row for row in table_rows(ctr_on(daemon, NS_76, "images", "ls"))}
    assert set(rows) == {"example.com/limits:1", "docker.io/library/beta:2"}
    assert rows["example.com/limits:1"][2] == doc["target"]["digest"]
    # containerd's Update re-validates the whole image: these succeed only if what we wrote is valid
    ctr_on(daemon, NS_76, "images", "label", "example.com/limits:1", "extra=1")
    ctr_on(daemon, "default", "images", "label", "docker.io/library/beta:2", "extra=1")
    rows = {row[0]: row for row in table_rows(ctr_on(daemon, NS_76, "images", "ls"))}
    assert "extra=1" in rows["example.com/limits:1"][-1]
    beta = {row[0]: row for row in table_rows(ctr_on(daemon, "default", "images", "ls"))}
    assert "extra=1" in beta["docker.io/library/beta:2"][-1]
    assert NS_76 in ctr_on(daemon, NS_76, "namespaces", "ls", "-q").split()
