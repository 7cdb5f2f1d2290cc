"""systemd's notify protocol: READY=1 once the socket serves, STOPPING=1 on SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time

import pytest

from boltimages.server import notify

from .conftest import REPO, health_ok, serve_argv, serve_env


def _listener(address: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(30)
    return sock


def _fields(datagram: bytes) -> dict[str, str]:
    return dict(line.split("=", 1) for line in datagram.decode().splitlines())


def test_no_socket_no_message():
    assert notify.notify("READY=1", environ={}) is False
    assert notify.notify("READY=1", environ={"NOTIFY_SOCKET": ""}) is False
    # a form we do not speak is ignored, not an error
    assert notify.notify("READY=1", environ={"NOTIFY_SOCKET": "vsock:2:1234"}) is False


def test_path_socket(tmp_path):
    path = str(tmp_path / "notify.sock")
    with _listener(path) as sock:
        assert notify.notify("READY=1\nSTATUS=x", environ={"NOTIFY_SOCKET": path}) is True
        assert _fields(sock.recv(4096)) == {"READY": "1", "STATUS": "x"}


def test_abstract_socket():
    name = f"boltimages-test-{os.getpid()}-{time.monotonic_ns()}"
    with _listener("\0" + name) as sock:
        assert notify.notify("STOPPING=1", environ={"NOTIFY_SOCKET": "@" + name}) is True
        assert sock.recv(4096) == b"STOPPING=1"


def test_nobody_listening_is_logged_not_raised(tmp_path, caplog):
    gone = str(tmp_path / "nobody.sock")
    assert notify.notify("READY=1", environ={"NOTIFY_SOCKET": gone}) is False
    assert "notification failed" in caplog.text


def test_serve_says_ready_when_serving_and_stopping_on_sigterm(tmp_path):
    notify_path = str(tmp_path / "notify.sock")
    sock_path = str(tmp_path / "bi.sock")
    db = str(tmp_path / "meta.db")
    with _listener(notify_path) as listener:
        env = serve_env()
        env["NOTIFY_SOCKET"] = notify_path
        log = open(tmp_path / "serve.log", "w")
        proc = subprocess.Popen(serve_argv("--socket", sock_path, "--db", db), env=env, cwd=str(REPO),
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            try:
                ready = _fields(listener.recv(4096))
            except socket.timeout:
                pytest.fail("no READY=1 within 30 s:\n" + (tmp_path / "serve.log").read_text())
            assert ready["READY"] == "1"
            assert ready["MAINPID"] == str(proc.pid)
            assert db in ready["STATUS"] and sock_path in ready["STATUS"]
            # the point of READY=1: the socket already answers when it arrives
            assert health_ok("unix://" + sock_path)
            proc.send_signal(signal.SIGTERM)
            assert _fields(listener.recv(4096))["STOPPING"] == "1"
            assert proc.wait(20) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
            log.close()
