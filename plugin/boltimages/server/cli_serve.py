"""The ``boltimages serve`` subcommand: flags, config file, and one-line errors."""

from __future__ import annotations

import argparse
import logging
import sys

from . import config as config_mod
from . import logs

log = logging.getLogger("boltimages.server")


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", metavar="FILE",
                        help="TOML config file in containerd's style ([grpc] address, tcp_address, "
                             "max_recv_message_size, max_send_message_size; [metadata] path; "
                             "[debug] level, format)")
    parser.add_argument("-a", "--address", "--socket", dest="address", metavar="PATH",
                        help=f"unix socket to listen on (default {config_mod.default_socket_path()})")
    parser.add_argument("--tcp", dest="tcp_address", metavar="HOST:PORT",
                        help="also listen on this loopback TCP address (e.g. 127.0.0.1:10010)")
    parser.add_argument("--db", dest="db_path", metavar="PATH",
                        help=f"metadata file to serve, created if missing (default {config_mod.default_db_path()}); "
                             "may be a copy of a node's containerd meta.db")
    parser.add_argument("--content-root", metavar="DIR",
                        help="containerd's content directory, so Content/Read can serve blobs (default: "
                             "found next to --db when it is <root>/io.containerd.metadata.v1.bolt/meta.db)")
    parser.add_argument("--read-only", action="store_true", default=None,
                        help="open the metadata file read-only (writes fail with FailedPrecondition)")
    parser.add_argument("--log-level", choices=["debug", "info", "warn", "error"], help="default info")
    parser.add_argument("--log-format", choices=["text", "json"], help="default text")
    parser.add_argument("--workers", type=int, metavar="N", help="gRPC worker threads (default from CPU count)")
    parser.add_argument("--grace-period", type=float, metavar="SECONDS",
                        help="how long in-flight calls may run after SIGTERM (default 10)")


def run_serve(args: argparse.Namespace) -> int:
    overrides = {key: getattr(args, key, None) for key in (
        "address", "tcp_address", "db_path", "content_root", "read_only", "log_level", "log_format", "workers", "grace_period")}
    try:
        cfg = config_mod.build(getattr(args, "config", None), overrides)
    except config_mod.ConfigError as exc:
        print(f"boltimages serve: {exc}", file=sys.stderr)
        return 2
    logs.setup(cfg.log_level, cfg.log_format)
    # before any worker thread exists, so none gets an arena of its own
    from .memory import tune_malloc
    tune_malloc()
    # imported late: the server pulls in grpc and the engine, which --help does not need
    from .app import ServeError, run
    from .listen import SocketInUse
    try:
        return run(cfg)
    except (ServeError, SocketInUse, config_mod.ConfigError) as exc:
        log.error("%s", exc)
        print(f"boltimages serve: {exc}", file=sys.stderr)
        return getattr(exc, "exit_code", 1)
    except KeyboardInterrupt:
        return 130
