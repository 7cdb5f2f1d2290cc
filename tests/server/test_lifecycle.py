"""Start-up errors, config file, logging, SIGTERM with calls in flight."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import threading
import time

import grpc

from boltimages import bolt
from boltimages.api.containerd.services.events.v1 import events_pb2, events_pb2_grpc
from boltimages.api.containerd.services.namespaces.v1 import namespace_pb2, namespace_pb2_grpc
from boltimages.store import namespaces as ns_store

from .conftest import health_ok, md, run_serve


def _one_line_error(result) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    lines = [l for l in result.stderr.splitlines() if l.startswith("boltimages serve:")]
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_db_created_on_first_run_with_parents(serve, tmp_path):
    db = tmp_path / "deep" / "er" / "meta.db"
    s = serve(db=str(db))
    assert s.stop() == 0
    assert db.exists()
    assert bolt.check_file(str(db)) == []


def test_locked_db_gives_one_line(tmp_path):
    db = tmp_path / "meta.db"
    with bolt.open(str(db)):  # holds bbolt's exclusive flock, as a running containerd does
        result = run_serve("--socket", str(tmp_path / "s.sock"), "--db", str(db))
    assert result.returncode == 3  # the offline commands' "locked" status
    line = _one_line_error(result)
    assert "locked" in line and str(db) in line
    assert not (tmp_path / "s.sock").exists()


def test_locked_by_plain_flock(tmp_path):
    db = tmp_path / "meta.db"
    with bolt.open(str(db)):
        pass
    fd = os.open(db, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        result = run_serve("--socket", str(tmp_path / "s.sock"), "--db", str(db))
    finally:
        os.close(fd)
    assert result.returncode == 3
    assert "locked" in _one_line_error(result)


def test_corrupt_db_gives_one_line(tmp_path):
    db = tmp_path / "meta.db"
    db.write_bytes(b"this is not a bolt file" * 400)
    result = run_serve("--socket", str(tmp_path / "s.sock"), "--db", str(db))
    assert result.returncode == 1
    assert str(db) in _one_line_error(result)


def test_unreadable_db_gives_one_line(tmp_path):
    if os.geteuid() == 0:
        # root reads through mode bits; a directory in place of the file is unreadable for everyone
        db = tmp_path / "meta.db"
        db.mkdir()
    else:
        db = tmp_path / "meta.db"
        with bolt.open(str(db)):
            pass
        db.chmod(0)
    result = run_serve("--socket", str(tmp_path / "s.sock"), "--db", str(db))
    assert result.returncode == 1
    assert str(db) in _one_line_error(result)


def test_config_file_sets_address_db_and_json_logs(serve, tmp_path):
    sock, db = tmp_path / "cfg.sock", tmp_path / "cfg.db"
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'version = 2\n[grpc]\n  address = "{sock}"\n  max_recv_message_size = 1024\n'
                   f'[metadata]\n  path = "{db}"\n[debug]\n  level = "debug"\n  format = "json"\n')
    s = serve("--config", str(cfg), socket=str(sock), db=str(db), use_flags=False)
    assert db.exists()
    # max_recv_message_size applies: a request above 1 KiB is refused
    stub = namespace_pb2_grpc.NamespacesStub(s.channel())
    big = namespace_pb2.CreateNamespaceRequest(namespace=namespace_pb2.Namespace(name="big", labels={"k": "v" * 4000}))
    try:
        stub.Create(big, timeout=10)
        raise AssertionError("oversized request accepted")
    except grpc.RpcError as err:
        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert s.stop() == 0
    records = [json.loads(l) for l in s.log().splitlines() if l.startswith("{")]
    assert any(r["msg"] == "serving" and r["address"] == str(sock) for r in records), s.log()
    assert all({"time", "level", "msg"} <= set(r) for r in records)


def test_flags_override_config_file(serve, tmp_path):
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'[grpc]\n  address = "{tmp_path / "from-file.sock"}"\n')
    s = serve("--config", str(cfg))
    assert os.path.exists(s.socket) and not (tmp_path / "from-file.sock").exists()


def test_bad_config_is_one_line(tmp_path):
    cfg = tmp_path / "config.toml"
    cfg.write_text("[grpc\naddress = 1\n")
    result = run_serve("--config", str(cfg))
    assert result.returncode == 2
    assert "not valid TOML" in _one_line_error(result)
    cfg.write_text('[grpc]\n  max_send_message_size = "big"\n')
    result = run_serve("--config", str(cfg))
    assert result.returncode == 2
    assert "max_send_message_size must be an integer" in _one_line_error(result)
    result = run_serve("--config", str(tmp_path / "missing.toml"))
    assert result.returncode == 2 and "does not exist" in _one_line_error(result)


def test_sigterm_lets_in_flight_calls_finish(serve, tmp_path):
    s = serve("--grace-period", "10")
    channel = s.channel()
    stub = namespace_pb2_grpc.NamespacesStub(channel)
    # an open event stream is the longest in-flight call: it must end cleanly, not be cut
    events = events_pb2_grpc.EventsStub(channel)
    stream = events.Subscribe(events_pb2.SubscribeRequest(), timeout=60)
    seen: list[str] = []
    stream_error: list[BaseException] = []

    def read_stream() -> None:
        try:
            for envelope in stream:
                seen.append(envelope.topic)
        except grpc.RpcError as err:
            stream_error.append(err)

    reader = threading.Thread(target=read_stream)
    reader.start()
    # the stream must really be open on the server before the signal: publish until one comes through
    deadline = time.monotonic() + 20
    while "/warmup" not in seen and time.monotonic() < deadline:
        events.Publish(events_pb2.PublishRequest(topic="/warmup"), metadata=md("default"), timeout=10)
        time.sleep(0.1)
    assert "/warmup" in seen, s.log()
    results: dict[str, object] = {}
    start = threading.Barrier(9)

    def create(i: int) -> None:
        start.wait()
        try:
            stub.Create(namespace_pb2.CreateNamespaceRequest(namespace=namespace_pb2.Namespace(name=f"ns{i}")),
                        timeout=30)
            results[f"ns{i}"] = "ok"
        except grpc.RpcError as err:
            results[f"ns{i}"] = err.code()

    threads = [threading.Thread(target=create, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    start.wait()
    s.proc.send_signal(signal.SIGTERM)
    for t in threads:
        t.join(30)
    # the open stream ends with OK when the server winds down, it is not cut off
    reader.join(30)
    assert not stream_error, f"event stream cut: {stream_error}\n{s.log()}"
    assert stream.code() == grpc.StatusCode.OK
    assert s.proc.wait(20) == 0, s.log()
    channel.close()
    # a call either completed (and is on disk) or was refused without effect: nothing half done.
    # calls still in transit when the listener closed are refused as UNAVAILABLE or CANCELLED.
    refused = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)
    assert all(r == "ok" or r in refused for r in results.values()), results
    created = {n for n, r in results.items() if r == "ok"}
    with bolt.open(s.db) as db:
        on_disk = set(db.view(ns_store.list_names))
        assert db.check() == []
    assert created <= on_disk
    assert len([topic for topic in seen if topic == "/namespaces/create"]) <= len(on_disk)
    assert not os.path.exists(s.socket)
    assert "stopped" in s.log()


def test_repeated_sigterm_still_exits_zero(serve):
    # a supervisor or an impatient user may signal again and again while we stop,
    # right through the interpreter's exit: that is still a clean stop
    s = serve("--grace-period", "1")
    deadline = time.monotonic() + 20
    while s.proc.poll() is None and time.monotonic() < deadline:
        s.proc.send_signal(signal.SIGTERM)
        time.sleep(0.005)
    assert s.proc.wait(5) == 0, s.log()
    assert "stopped" in s.log()
    assert not os.path.exists(s.socket)


def test_sigint_also_stops_cleanly(serve):
    s = serve()
    assert s.stop(signal.SIGINT) == 0
    assert not os.path.exists(s.socket)


def test_restart_on_same_paths(serve, tmp_path):
    s1 = serve()
    stub = namespace_pb2_grpc.NamespacesStub(s1.channel())
    stub.Create(namespace_pb2.CreateNamespaceRequest(namespace=namespace_pb2.Namespace(name="keep")), timeout=10)
    assert s1.stop() == 0
    s2 = serve(socket=s1.socket, db=s1.db)
    stub = namespace_pb2_grpc.NamespacesStub(s2.channel())
    names = [n.name for n in stub.List(namespace_pb2.ListNamespacesRequest(), timeout=10).namespaces]
    assert names == ["keep"]
    assert health_ok(s2.target)
