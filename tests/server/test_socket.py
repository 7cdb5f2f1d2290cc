"""Unix socket handling of `boltimages serve`: mode, stale sockets, live sockets, TCP."""

from __future__ import annotations

import os
import socket
import stat

import pytest

from .conftest import health_ok, run_serve


def test_socket_mode_0660_and_removed_on_sigterm(serve):
    s = serve()
    assert stat.S_IMODE(os.stat(s.socket).st_mode) == 0o660
    assert stat.S_ISSOCK(os.stat(s.socket).st_mode)
    assert s.stop() == 0
    assert not os.path.exists(s.socket)
    assert not os.path.exists(s.socket + ".lock")


def test_stale_socket_is_replaced(serve, tmp_path):
    path = str(tmp_path / "stale.sock")
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(path)  # bound, never listening, then closed: what a crashed server leaves
    dead.close()
    assert os.path.exists(path)
    s = serve(socket=path)
    assert health_ok(s.target)


def test_live_socket_is_never_stolen(serve, tmp_path):
    first = serve()
    second = run_serve("--socket", first.socket, "--db", str(tmp_path / "other.db"))
    assert second.returncode == 1
    assert "Traceback" not in second.stderr
    err_lines = [l for l in second.stderr.splitlines() if l.startswith("boltimages serve:")]
    assert len(err_lines) == 1, second.stderr
    assert "another" in err_lines[0] and first.socket in err_lines[0]
    # the first server still owns and answers on its socket
    assert health_ok(first.target)


def test_socket_of_foreign_listener_is_not_stolen(serve, tmp_path):
    path = str(tmp_path / "foreign.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)
    try:
        result = run_serve("--socket", path, "--db", str(tmp_path / "x.db"))
        assert result.returncode == 1
        assert "another server is listening on" in result.stderr
        assert os.path.exists(path)
    finally:
        listener.close()


def test_regular_file_at_socket_path_is_refused(tmp_path):
    path = tmp_path / "notasocket"
    path.write_text("precious")
    result = run_serve("--socket", str(path), "--db", str(tmp_path / "x.db"))
    assert result.returncode == 1
    assert "is not a socket" in result.stderr
    assert path.read_text() == "precious"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_loopback_tcp_listener(serve):
    port = _free_port()
    serve("--tcp", f"127.0.0.1:{port}")
    assert health_ok(f"127.0.0.1:{port}")


@pytest.mark.parametrize("address", ["0.0.0.0:10010", "8.8.8.8:1", "example.com:80", "127.0.0.1", "[::]:5"])
def test_non_loopback_tcp_refused(tmp_path, address):
    result = run_serve("--socket", str(tmp_path / "s.sock"), "--db", str(tmp_path / "m.db"), "--tcp", address)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "loopback" in result.stderr
    assert not (tmp_path / "m.db").exists()
