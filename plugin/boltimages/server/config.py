"""Server settings: defaults, a containerd-style TOML file, then command-line flags.

The file uses containerd's section and key names where they mean the same
thing, so an operator can reuse what they know::

    version = 2
    [grpc]
      address = "/run/boltimages/boltimages.sock"
      tcp_address = "127.0.0.1:10010"        # loopback only
      max_recv_message_size = 16777216
      max_send_message_size = 16777216
      uid = 0
      gid = 0
      max_concurrent_streams = 1000          # per connection (SETTINGS_MAX_CONCURRENT_STREAMS)
      max_connection_buffer = 33554432       # unconsumed request bytes per connection
      max_streaming_calls = 0                # streams holding a worker; 0 = workers - 8
      max_header_list_size = 65536           # request header list, bytes
      socket_send_buffer = 2097152           # SO_SNDBUF per unix connection; 0 = kernel default
    [metadata]
      path = "/var/lib/boltimages/meta.db"
      content_root = ""                       # containerd content dir, for Content/Read
    [debug]
      level = "info"                          # debug, info, warn, error
      format = "text"                         # text or json

Precedence: built-in defaults < config file < flags.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

try:
    import tomllib  # Python 3.11+
except ModuleNotFoundError:  # pragma: no cover - older Pythons use the backport
    import tomli as tomllib  # type: ignore[no-redef]

DEFAULT_MESSAGE_SIZE = 16 << 20
LOG_LEVELS = ("trace", "debug", "info", "warn", "warning", "error", "fatal", "panic")
LOG_FORMATS = ("text", "json")


class ConfigError(Exception):
    """A setting is wrong; the text names the setting and says why."""


def _is_root() -> bool:
    return os.geteuid() == 0


def default_socket_path() -> str:
    if _is_root():
        return "/run/boltimages/boltimages.sock"
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime):
        return os.path.join(runtime, "boltimages", "boltimages.sock")
    return f"/tmp/boltimages-{os.getuid()}/boltimages.sock"


def default_db_path() -> str:
    if _is_root():
        return "/var/lib/boltimages/meta.db"
    data = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(data, "boltimages", "meta.db")


@dataclass
class ServerConfig:
    address: str = field(default_factory=default_socket_path)
    tcp_address: str = ""
    max_recv_message_size: int = DEFAULT_MESSAGE_SIZE
    max_send_message_size: int = DEFAULT_MESSAGE_SIZE
    socket_uid: int = -1
    socket_gid: int = -1
    db_path: str = field(default_factory=default_db_path)
    # containerd's content directory, for Content/Read; "" = <root>/io.containerd.content.v1.content
    # when the db sits at <root>/io.containerd.metadata.v1.bolt/meta.db, else none
    content_root: str = ""
    log_level: str = "info"
    log_format: str = "text"
    workers: int = 0  # 0: chosen from the CPU count
    grace_period: float = 10.0
    read_only: bool = False
    # the transport's budgets per client (server/h2/limits.py says why each)
    max_concurrent_streams: int = 1000
    max_connection_buffer: int = 32 << 20
    max_streaming_calls: int = 0  # 0: workers - 8
    max_header_list_size: int = 64 << 10
    socket_send_buffer: int = 2 << 20

    def validate(self) -> None:
        if not self.address:
            raise ConfigError("grpc.address must not be empty")
        if self.tcp_address:
            check_loopback(self.tcp_address)
        for name in ("max_recv_message_size", "max_send_message_size", "max_concurrent_streams",
                     "max_connection_buffer", "max_header_list_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ConfigError(f"grpc.{name} must be a positive integer, got {value!r}")
        for name in ("max_streaming_calls", "socket_send_buffer"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ConfigError(f"grpc.{name} must be 0 or more, got {value!r}")
        if self.socket_send_buffer > 1 << 30:
            raise ConfigError(f"grpc.socket_send_buffer must be at most 1 GiB, got {self.socket_send_buffer}")
        if self.log_level not in LOG_LEVELS:
            raise ConfigError(f"debug.level must be one of {', '.join(LOG_LEVELS)}, got {self.log_level!r}")
        if self.log_format not in LOG_FORMATS:
            raise ConfigError(f"debug.format must be text or json, got {self.log_format!r}")
        if self.workers < 0:
            raise ConfigError("workers must not be negative")
        if self.grace_period < 0:
            raise ConfigError("grace period must not be negative")

    def worker_count(self) -> int:
        # gRPC calls are short and mostly wait on the engine's lock or on I/O;
        # a few threads per core keep reads flowing while a batch commits.
        # Event subscriptions each hold a thread for their whole life: 48 more
        # leave room for that many `ctr events` (the events service refuses more).
        return self.workers or max(16, 4 * (os.cpu_count() or 1)) + 48


def check_loopback(address: str) -> None:
    """Refuse anything but a loopback IP:PORT (the API has no authentication)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"tcp address {address!r} must be HOST:PORT with a loopback HOST")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if host == "localhost":
        return
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise ConfigError(f"tcp address {address!r}: host must be a loopback IP address or localhost") from None
    if not ip.is_loopback:
        raise ConfigError(f"tcp address {address!r} is not loopback; the API has no authentication, "
                          f"so boltimages only listens on 127.0.0.0/8 or ::1")


def _section(data: dict[str, Any], name: str, path: str) -> dict[str, Any]:
    value = data.get(name, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: [{name}] must be a table")
    return value


def _typed(section: dict[str, Any], key: str, kind: type, where: str) -> Any:
    value = section[key]
    if kind is int and isinstance(value, bool) or not isinstance(value, kind):
        raise ConfigError(f"{where}: {key} must be {'an integer' if kind is int else 'a string'}, got {value!r}")
    return value


def load_file(path: str, config: ServerConfig) -> ServerConfig:
    """Apply the TOML file at ``path`` onto ``config``; unknown sections are ignored like containerd."""
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    version = data.get("version", 2)
    if version not in (1, 2, 3):
        raise ConfigError(f"{path}: unsupported config version {version!r}")
    grpc = _section(data, "grpc", path)
    for key, attr, kind in (("address", "address", str), ("tcp_address", "tcp_address", str),
                            ("max_recv_message_size", "max_recv_message_size", int),
                            ("max_send_message_size", "max_send_message_size", int),
                            ("uid", "socket_uid", int), ("gid", "socket_gid", int),
                            ("max_concurrent_streams", "max_concurrent_streams", int),
                            ("max_connection_buffer", "max_connection_buffer", int),
                            ("max_streaming_calls", "max_streaming_calls", int),
                            ("max_header_list_size", "max_header_list_size", int),
                            ("socket_send_buffer", "socket_send_buffer", int)):
        if key in grpc:
            setattr(config, attr, _typed(grpc, key, kind, f"{path} [grpc]"))
    metadata = _section(data, "metadata", path)
    if "path" in metadata:
        config.db_path = _typed(metadata, "path", str, f"{path} [metadata]")
    if "content_root" in metadata:
        config.content_root = _typed(metadata, "content_root", str, f"{path} [metadata]")
    debug = _section(data, "debug", path)
    if "level" in debug:
        config.log_level = _typed(debug, "level", str, f"{path} [debug]").lower()
    if "format" in debug:
        config.log_format = _typed(debug, "format", str, f"{path} [debug]").lower()
    return config


def expand(path: str) -> str:
    return str(Path(os.path.expanduser(path)))


def build(config_path: Optional[str], overrides: dict[str, Any]) -> ServerConfig:
    """Defaults, then the file (if any), then non-None flag values."""
    config = ServerConfig()
    if config_path:
        load_file(config_path, config)
    for key, value in overrides.items():
        if value is not None:
            setattr(config, key, value)
    config.address = expand(config.address)
    config.db_path = expand(config.db_path)
    config.validate()
    return config
