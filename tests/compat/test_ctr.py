"""Unmodified `ctr` against our socket, compared with the same commands against real containerd.

Each release's own ctr (1.6.20, 1.7.24, 2.1.9) against its own containerd and against
ours. Where a ctr release calls something else (2.x tags through Transfer; 1.7/2.x ask
Introspection/Server first), the expectation is written per release below.

Images are seeded through the Images API (our server keeps metadata only, so
`ctr images import` — which writes blobs through the Content service — is not
the way in). Output is compared where it is the server's answer: names, types,
digests, labels, error text and exit codes. Columns computed from blobs
(SIZE, PLATFORMS) and log timestamps are left out, see CTR_CALLS.md.
"""

from __future__ import annotations

import re
import subprocess
import threading
import time
import uuid

import pytest
from google.protobuf import any_pb2

from tests.compat import scenario
from tests.compat.ctr_runner import Ctr, CtrResult, table_rows
from tests.compat.grpc_client import Client, api
from tests.compat.grpc_proxy import LoggingProxy, short_method

pytestmark = pytest.mark.compat

SEED = [
    dict(name="docker.io/library/alpine:3.18", digest=scenario.D256, media_type=scenario.MANIFEST,
         labels={"env": "prod"}),
    dict(name="docker.io/library/busybox:1", digest=scenario.D256B, media_type=scenario.INDEX),
    dict(name="example.com/app:v1", digest=scenario.D256C, media_type=scenario.DOCKER_MANIFEST,
         labels={"a": "1", "b": "2"}),
]


def _seed(client: Client, namespace: str) -> None:
    run = scenario.Run(client, namespace)
    for image in SEED:
        out = run.create(**image)
        assert out.ok, f"seeding {image['name']} into {namespace}: {out}"


def _fresh_ns(tag: str) -> str:
    return f"compat-ctr-{tag}-{uuid.uuid4().hex[:8]}"


_LOG_TIME = re.compile(r'time="[^"]*" ')


def _labels(cell: str) -> str:
    """ctr prints label maps as k=v,k=v in Go's random map order: compare them sorted."""
    return ",".join(sorted(cell.split(","))) if "=" in cell else cell


def _answer(result: CtrResult) -> tuple:
    """What a ctr run tells the user, minus log timestamps and map order."""
    stdout = "\n".join(" ".join(_labels(cell) for cell in line.split(" ")) for line in result.stdout.split("\n"))
    return result.rc, stdout, _LOG_TIME.sub("", result.stderr)


def _ls_columns(stdout: str) -> list:
    """REF, TYPE, DIGEST and LABELS of `ctr images ls` (SIZE/PLATFORMS come from blobs)."""
    return [(row[0], row[1], row[2], _labels(row[-1])) for row in table_rows(stdout)]


@pytest.fixture
def both(real_client: Client, our_client: Client, real_ctr: Ctr, our_ctr: Ctr):
    """(real ctr, our ctr) on a fresh namespace seeded identically on both servers."""
    namespace = _fresh_ns("seeded")
    _seed(real_client, namespace)
    _seed(our_client, namespace)
    real_ctr.namespace = our_ctr.namespace = namespace
    return real_ctr, our_ctr


def _same(real: Ctr, ours: Ctr, *args: str) -> tuple:
    theirs, mine = real(*args), ours(*args)
    assert _answer(mine) == _answer(theirs), (f"ctr {' '.join(args)} differs\n"
                                              f"containerd: {_answer(theirs)}\nboltimages: {_answer(mine)}")
    return theirs, mine


def test_images_ls(both) -> None:
    real, ours = both
    theirs, mine = real("images", "ls").ok(), ours("images", "ls").ok()
    assert _ls_columns(mine.stdout) == _ls_columns(theirs.stdout)
    assert [r[0] for r in _ls_columns(theirs.stdout)] == [s["name"] for s in sorted(SEED, key=lambda s: s["name"])]
    assert mine.stdout.splitlines()[0].split() == theirs.stdout.splitlines()[0].split()


def test_images_ls_quiet(both) -> None:
    real, ours = both
    theirs, _ = _same(real, ours, "images", "ls", "-q")
    assert theirs.stdout.split() == sorted(s["name"] for s in SEED)


def test_images_ls_filter(both) -> None:
    real, ours = both
    _same(real, ours, "images", "ls", "-q", "labels.env==prod")
    _same(real, ours, "images", "ls", "-q", "name~=alpine", "name~=app")


# How each ctr tags (measured through grpc_proxy, CTR_CALLS.md): 1.6 and 1.7 through Images
# Get/Create (Delete + Create for --force), as 1.7/2.x do with --local; 2.x by default
# through Transfer/Transfer (image store to image store), which overwrites an existing
# target without --force and does not copy the source's labels.
TAG_USES_TRANSFER = {"1.6": False, "1.7": False, "2.1": True}
LOCAL_FLAG = {"1.6": (), "1.7": ("--local",), "2.1": ("--local",)}   # 1.6's ctr has no --local


def _tag_sequence(real: Ctr, ours: Ctr, flags: tuple, overwrites: bool) -> None:
    tag = ("images", "tag", *flags)
    first, _ = _same(real, ours, *tag, "docker.io/library/alpine:3.18", "example.com/copy:1")
    assert first.rc == 0 and "example.com/copy:1" in first.stdout
    again, _ = _same(real, ours, *tag, "docker.io/library/alpine:3.18", "example.com/copy:1")
    if overwrites:
        assert again.rc == 0, again
    else:
        assert again.rc != 0 and "already exists" in again.stderr
    forced, _ = _same(real, ours, *tag, "--force", "docker.io/library/busybox:1", "example.com/copy:1")
    assert forced.rc == 0
    _same(real, ours, "images", "ls", "-q", "target.digest==" + scenario.D256B)
    assert _ls_columns(ours("images", "ls").ok().stdout) == _ls_columns(real("images", "ls").ok().stdout)
    missing, _ = _same(real, ours, *tag, "docker.io/library/none:1", "example.com/x:1")
    assert missing.rc != 0


def test_images_tag_local(both, release) -> None:
    """The Images Get/Create path, on every ctr (1.6's only path; --local on 1.7/2.x)."""
    real, ours = both
    _tag_sequence(real, ours, LOCAL_FLAG[release.minor], overwrites=False)


def test_images_tag_default(both, release) -> None:
    """`ctr images tag` as a user types it: through Transfer on 2.x."""
    real, ours = both
    _tag_sequence(real, ours, (), overwrites=TAG_USES_TRANSFER[release.minor])


def test_images_label(both) -> None:
    real, ours = both
    _same(real, ours, "images", "label", "example.com/app:v1", "c=3", "a=")
    theirs, mine = real("images", "ls").ok(), ours("images", "ls").ok()
    assert _ls_columns(mine.stdout) == _ls_columns(theirs.stdout)
    _same(real, ours, "images", "label", "--replace-all", "example.com/app:v1", "only=1")
    _same(real, ours, "images", "ls", "-q", "labels.only==1")
    _same(real, ours, "images", "label", "example.com/none:1", "x=y")


def test_images_rm(both) -> None:
    real, ours = both
    _same(real, ours, "images", "rm", "docker.io/library/busybox:1")
    _same(real, ours, "images", "rm", "--sync", "example.com/app:v1", "docker.io/library/none:1")
    theirs, _ = _same(real, ours, "images", "ls", "-q")
    assert theirs.stdout.split() == ["docker.io/library/alpine:3.18"]


def test_images_check(both) -> None:
    """Seeded images have no blobs: both servers must report them the same way."""
    real, ours = both
    theirs, mine = real("images", "check"), ours("images", "check")
    assert mine.rc == theirs.rc, f"containerd:\n{theirs}\nboltimages:\n{mine}"
    assert table_rows(mine.stdout) == table_rows(theirs.stdout)


def test_snapshots_ls(both) -> None:
    """A namespace without snapshots (kinds on real data: test_files_both_ways)."""
    real, ours = both
    for args in (("snapshots", "ls"), ("snapshots", "--snapshotter", "native", "ls")):
        theirs, _ = _same(real, ours, *args)
        assert theirs.rc == 0 and theirs.stdout.split() == ["KEY", "PARENT", "KIND"]


def test_containers_ls(both) -> None:
    real, ours = both
    theirs, _ = _same(real, ours, "containers", "ls")
    assert theirs.rc == 0 and theirs.stdout.split() == ["CONTAINER", "IMAGE", "RUNTIME"]
    _same(real, ours, "containers", "ls", "-q")


def test_namespaces(real_ctr: Ctr, our_ctr: Ctr) -> None:
    name = _fresh_ns("ns")
    for ctr in (real_ctr, our_ctr):
        ctr.namespace = name
    _same(real_ctr, our_ctr, "namespaces", "create", name, "a=1", "b=2")
    again, _ = _same(real_ctr, our_ctr, "namespaces", "create", name)
    assert again.rc != 0
    _same(real_ctr, our_ctr, "namespaces", "label", name, "c=3", "a=")
    theirs = [[_labels(c) for c in row] for row in table_rows(real_ctr("namespaces", "ls").ok().stdout)
              if row[0] == name]
    mine = [[_labels(c) for c in row] for row in table_rows(our_ctr("namespaces", "ls").ok().stdout)
            if row[0] == name]
    assert mine == theirs and theirs, f"containerd {theirs} vs boltimages {mine}"
    quiet_theirs = real_ctr("namespaces", "ls", "-q").ok().stdout.split()
    quiet_mine = our_ctr("namespaces", "ls", "-q").ok().stdout.split()
    assert (name in quiet_mine) and (name in quiet_theirs)
    _same(real_ctr, our_ctr, "namespaces", "remove", name)
    _same(real_ctr, our_ctr, "namespaces", "remove", name)


def test_namespace_remove_non_empty(both) -> None:
    real, ours = both
    theirs, mine = real("namespaces", "remove", real.namespace), ours("namespaces", "remove", ours.namespace)
    assert theirs.rc != 0 and mine.rc != 0
    assert "must be empty, but it still has images" in mine.stderr, mine.stderr


def _events(ctr: Ctr, actions) -> list:
    """Run `ctr events` while `actions(ctr)` runs; return (namespace, topic, payload) lines.

    ctr prints nothing when its subscription is live, so a sentinel event is
    published through the Events API until ctr echoes it; sentinels are dropped.
    """
    argv = [ctr.ctr, "--address", ctr.address, "-n", ctr.namespace, "events"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)
    reader.start()
    try:
        _wait_for_sentinel(ctr.address, lines)
        actions(ctr)
        _wait_for_sentinel(ctr.address, lines, count=2)   # in order: everything before it has arrived
    finally:
        proc.terminate()
        proc.wait(10)
        reader.join(10)
    events = []
    for line in lines:
        # "2026-11-26 15:23:23.47 +0000 UTC default /images/create {...}"
        parts = line.rstrip("\n").split(" ", 6)
        if len(parts) == 7 and parts[5] != SENTINEL_TOPIC:
            events.append((parts[4], parts[5], parts[6]))
    return events


SENTINEL_TOPIC = "/compat/ready"


def _wait_for_sentinel(address: str, lines: list, timeout: float = 20.0, count: int = 1) -> None:
    """Publish sentinel events until ctr has printed at least `count` of them."""
    client = Client(address)
    events_pb2 = api("services.events.v1.events_pb2")
    stub = api("services.events.v1.events_pb2_grpc").EventsStub(client.channel)
    payload = api("events.image_pb2").ImageCreate(name="ready")
    event = any_pb2.Any(type_url=payload.DESCRIPTOR.full_name, value=payload.SerializeToString())
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            client.call(stub.Publish, events_pb2.PublishRequest(topic=SENTINEL_TOPIC, event=event), "compat-ready")
            for _ in range(10):
                if sum(SENTINEL_TOPIC in line for line in list(lines)) >= count:
                    return
                time.sleep(0.02)
    finally:
        client.close()
    raise AssertionError("ctr events never printed the readiness event")


def test_events(real_ctr: Ctr, our_ctr: Ctr) -> None:
    name = _fresh_ns("events")

    def actions(ctr: Ctr) -> None:
        ctr.namespace = name
        ctr("namespaces", "create", name).ok()
        ctr("leases", "create", "--id", "ev-lease").ok()
        ctr("images", "tag", "--force", "nosuch:1", "x:1")   # fails: emits nothing
        ctr("leases", "delete", "ev-lease").ok()
        ctr("namespaces", "label", name, "k=v").ok()
        ctr("namespaces", "remove", name).ok()

    theirs = [e for e in _events(real_ctr, actions) if name in e[0] or name in e[2]]
    mine = [e for e in _events(our_ctr, actions) if name in e[0] or name in e[2]]
    assert theirs, "containerd emitted no events for the scenario"
    assert mine == theirs


def test_events_images(release, real_client: Client, our_client: Client, real_ctr: Ctr, our_ctr: Ctr) -> None:
    name = _fresh_ns("imgevents")

    def actions(ctr: Ctr) -> None:
        client = real_client if ctr is real_ctr else our_client
        _seed(client, name)
        # The Images path (the Transfer path of 2.x is test_images_tag_default's)
        ctr("images", "tag", *LOCAL_FLAG[release.minor], "docker.io/library/alpine:3.18", "example.com/tagged:1").ok()
        ctr("images", "label", "example.com/tagged:1", "k=v").ok()
        ctr("images", "rm", "example.com/tagged:1").ok()

    real_ctr.namespace = our_ctr.namespace = name
    theirs = [e for e in _events(real_ctr, actions) if e[1].startswith("/images/")]
    mine = [e for e in _events(our_ctr, actions) if e[1].startswith("/images/")]
    assert [e[1] for e in theirs] == ["/images/create"] * 4 + ["/images/update", "/images/delete"]
    assert mine == theirs


def test_version(real_ctr: Ctr, our_ctr: Ctr) -> None:
    theirs, mine = real_ctr("version").ok(), our_ctr("version").ok()
    shape = lambda text: [line.split(":")[0].strip() for line in text.splitlines() if line.strip()]
    assert shape(mine.stdout) == shape(theirs.stdout)
    uuid_line = [line for line in mine.stdout.splitlines() if "UUID:" in line]
    assert uuid_line and len(uuid_line[0].split("UUID:")[1].strip()) >= 8


def test_plugins_ls(real_ctr: Ctr, our_ctr: Ctr) -> None:
    theirs, mine = real_ctr("plugins", "ls").ok(), our_ctr("plugins", "ls").ok()
    assert mine.stdout.splitlines()[0].split() == theirs.stdout.splitlines()[0].split()
    rows = {(r[0], r[1]): r[-1] for r in table_rows(mine.stdout)}
    for grpc_service in ("images", "namespaces", "leases", "version", "introspection", "events"):
        assert rows.get(("io.containerd.grpc.v1", grpc_service)) == "ok", f"{grpc_service} missing in\n{mine.stdout}"


# Which RPCs each command makes, checked against both servers (see CTR_CALLS.md).
# Only the metadata services are compared: Content/Snapshots calls are not ours.
# ctr 1.6's calls; newer ctr differ as CALLS_BY_RELEASE says (measured).
CALLS = {
    ("images", "ls", "-q"): ["Images/List"],
    ("images", "tag", "docker.io/library/alpine:3.18", "example.com/t:1"):
        ["Leases/Create", "Images/Get", "Images/Create", "Leases/Delete"],
    ("images", "tag", "--force", "docker.io/library/busybox:1", "example.com/t:1"):
        ["Leases/Create", "Images/Get", "Images/Create", "Images/Delete", "Images/Create", "Leases/Delete"],
    # seeded images, so these do not depend on the tags above having worked
    ("images", "label", "docker.io/library/busybox:1", "k=v"): ["Images/Update"],
    ("images", "rm", "--sync", "example.com/app:v1"): ["Images/Delete"],
    ("namespaces", "ls", "-q"): ["Namespaces/List"],
    ("namespaces", "create", "compat-calls-extra", "a=b"): ["Namespaces/Create"],
    ("namespaces", "label", "compat-calls-extra", "c=d"): ["Namespaces/Update"],
    ("namespaces", "remove", "compat-calls-extra"): ["Namespaces/Delete"],
    ("images", "ls"): ["Images/List"],
    ("leases", "ls"): ["Leases/List"],
    ("version",): ["Version/Version", "Introspection/Server"],
    ("plugins", "ls"): ["Introspection/Plugins"],
    ("snapshots", "ls"): ["Snapshots/List"],
    ("containers", "ls"): ["Containers/ListStream"],
}
METADATA_SERVICES = ("Images/", "Leases/", "Namespaces/", "Version/", "Introspection/", "Events/", "Transfer/",
                     "Streaming/", "Snapshots/", "Containers/")
COMMAND_IDS = [" ".join(c[:2] if c[0] != "version" else c) + ("-force" if "--force" in c else "")
               + ("-q" if "-q" in c else "") for c in CALLS]


def _expected_calls(command: tuple, minor: str) -> list[str]:
    calls = list(CALLS[command])
    if TAG_USES_TRANSFER[minor] and command[:2] == ("images", "tag"):
        calls = ["Leases/Create", "Transfer/Transfer", "Leases/Delete"]
    if minor != "1.6":
        calls = ["Introspection/Server", *calls]   # ctr 1.7/2.x ask for the server's identity first
    return calls


@pytest.fixture(scope="session")
def ctr_calls(release, real_containerd, our_server, real_client: Client, our_client: Client,
              tmp_path_factory) -> dict:
    """(server, command) -> [(method, status, namespace)] for every command of CALLS."""
    tmp = tmp_path_factory.mktemp(f"calls-{release.minor}")
    namespace = _fresh_ns("calls")
    seen = {"namespace": namespace}
    for label, daemon, client in (("containerd", real_containerd, real_client), ("boltimages", our_server, our_client)):
        _seed(client, namespace)
        with LoggingProxy(str(tmp / f"{label}.sock"), daemon.address) as proxy:
            ctr = Ctr(release.ctr, str(tmp / f"{label}.sock"), namespace)
            for command in CALLS:
                ctr(*command)
                calls = [(short_method(c.method), c.code, c.namespace) for c in proxy.take()
                         if short_method(c.method).startswith(METADATA_SERVICES)]
                seen[(label, command)] = calls
    return seen


@pytest.mark.parametrize("command", list(CALLS), ids=COMMAND_IDS)
def test_ctr_calls(command: tuple, release, ctr_calls: dict) -> None:
    theirs, mine = ctr_calls[("containerd", command)], ctr_calls[("boltimages", command)]
    assert [c[0] for c in theirs] == _expected_calls(command, release.minor), (
        f"ctr {release.version} {' '.join(command)} on containerd called {theirs}")
    assert all(c[2] == ctr_calls["namespace"] for c in theirs)
    assert mine == theirs, f"ctr {' '.join(command)}: containerd {theirs}\nboltimages {mine}"
