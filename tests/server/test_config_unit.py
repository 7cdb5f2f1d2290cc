"""Config defaults and the TOML file, without starting a server."""

from __future__ import annotations

import pytest

from boltimages.server import config


def test_default_paths_for_root(monkeypatch):
    monkeypatch.setattr(config.os, "geteuid", lambda: 0)
    assert config.default_socket_path() == "/run/boltimages/boltimages.sock"
    assert config.default_db_path() == "/var/lib/boltimages/meta.db"


def test_default_paths_for_a_user(monkeypatch, tmp_path):
    monkeypatch.setattr(config.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(config.os, "getuid", lambda: 1000)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert config.default_socket_path() == str(tmp_path / "boltimages" / "boltimages.sock")
    assert config.default_db_path() == str(tmp_path / "data" / "boltimages" / "meta.db")
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert config.default_socket_path() == "/tmp/boltimages-1000/boltimages.sock"
    assert config.default_db_path() == str(tmp_path / "home" / ".local" / "share" / "boltimages" / "meta.db")


@pytest.mark.parametrize("address", ["127.0.0.1:1", "127.9.9.9:65535", "[::1]:80", "localhost:10010"])
def test_loopback_accepted(address):
    config.check_loopback(address)


@pytest.mark.parametrize("address", ["0.0.0.0:1", "10.0.0.1:80", "[::]:80", "host:1", "127.0.0.1:0x", "127.0.0.1",
                                     "127.0.0.1:70000"])
def test_non_loopback_refused(address):
    with pytest.raises(config.ConfigError):
        config.check_loopback(address)


def test_file_then_flags(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('version = 2\n[grpc]\naddress = "/x/a.sock"\ntcp_address = "127.0.0.1:5000"\n'
                   'max_send_message_size = 1048576\nuid = 12\nsocket_send_buffer = 0\n[metadata]\npath = "/x/m.db"\n'
                   '[debug]\nlevel = "DEBUG"\nformat = "json"\n[plugins]\nanything = 1\n')
    c = config.build(str(cfg), {"db_path": "/y/m.db", "address": None})
    assert (c.address, c.tcp_address, c.db_path, c.max_send_message_size, c.max_recv_message_size) == \
        ("/x/a.sock", "127.0.0.1:5000", "/y/m.db", 1 << 20, 16 << 20)
    assert (c.socket_uid, c.log_level, c.log_format, c.socket_send_buffer) == (12, "debug", "json", 0)


@pytest.mark.parametrize("text, message", [
    ('[grpc]\nmax_recv_message_size = -1\n', "positive"),
    ('[grpc]\nmax_recv_message_size = true\n', "integer"),
    ('[grpc]\nsocket_send_buffer = -1\n', "0 or more"),
    ('[grpc]\nsocket_send_buffer = 4294967296\n', "at most 1 GiB"),
    ('grpc = 3\n', "must be a table"),
    ('[debug]\nlevel = "loud"\n', "debug.level"),
    ('[debug]\nformat = "xml"\n', "debug.format"),
    ('version = 9\n', "unsupported config version"),
    ('[grpc]\ntcp_address = "0.0.0.0:1"\n', "not loopback"),
])
def test_bad_files(tmp_path, text, message):
    cfg = tmp_path / "c.toml"
    cfg.write_text(text)
    with pytest.raises(config.ConfigError, match=message):
        config.build(str(cfg), {})
