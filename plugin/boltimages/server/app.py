"""The gRPC server: every service on one unix socket (and optionally loopback TCP).

Lifecycle: open the metadata file, claim the socket path, register services,
serve until SIGTERM/SIGINT, then stop accepting calls, give in-flight calls
a grace period, end event streams, close the file (its write lock released)
and remove the socket.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from concurrent import futures
from datetime import datetime, timezone
from typing import Any, Callable, Optional

from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from ..api.containerd.services.containers.v1 import containers_pb2, containers_pb2_grpc
from ..api.containerd.services.content.v1 import content_pb2, content_pb2_grpc
from ..api.containerd.services.events.v1 import events_pb2, events_pb2_grpc
from ..api.containerd.services.introspection.v1 import introspection_pb2, introspection_pb2_grpc
from ..api.containerd.services.leases.v1 import leases_pb2, leases_pb2_grpc
from ..api.containerd.services.namespaces.v1 import namespace_pb2, namespace_pb2_grpc
from ..api.containerd.services.snapshots.v1 import snapshots_pb2, snapshots_pb2_grpc
from ..api.containerd.services.streaming.v1 import streaming_pb2, streaming_pb2_grpc
from ..api.containerd.services.transfer.v1 import transfer_pb2, transfer_pb2_grpc
from ..api.containerd.services.version.v1 import version_pb2, version_pb2_grpc
from ..lockholder import is_locked
from ..store.db import MetadataDB
from ..store.rootdirs import containerd_root, default_content_root
from ..store.snapshot_kinds import SnapshotKinds
from ..version import revision, version_string
from . import notify
from .config import ServerConfig, check_loopback
from .containers_service import ContainersServicer
from .content_service import ContentServicer
from .event_bus import EventBus
from .events_service import EventsServicer
from .h2 import NativeServer
from .h2.limits import Limits
from .memory import settle_collector
from .introspection_service import IntrospectionServicer, default_plugins, store_uuid
from .leases_service import LeasesServicer, remove_expired as remove_expired_leases
from .listen import SocketClaim
from .namespaces_service import NamespacesServicer
from .snapshots_service import SnapshotsServicer
from .streaming_service import StreamingServicer, StreamRegistry
from .transfer_service import TransferServicer
from .version_service import VersionServicer

log = logging.getLogger("boltimages.server")

#: how often expired leases are removed (containerd's GC does it on its schedule)
LEASE_SWEEP_SECONDS = 60.0


#: exit status when the metadata file is locked (same as the offline commands)
EXIT_LOCKED = 3
#: longest a SIGTERM/SIGINT that slipped past an interrupted wait stays unhandled (see Server.wait)
SIGNAL_POLL_SECONDS = 0.5
#: problems the start-up check collects before it stops looking (one is enough to warn)
DAMAGE_REPORT_MAX = 10

#: how much longer than the grace period shutdown waits for the transport to finish
STOP_SLACK_SECONDS = 3.0


class ServeError(Exception):
    """Start-up failed; the text is the one line the user sees."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def _held_by_another_process(path: str) -> bool:
    """True when someone holds bbolt's flock on ``path`` (containerd running on it)."""
    try:
        return is_locked(path)
    except OSError:
        return False


def _images_servicer(db: MetadataDB, publish: Callable[[str, str, Any], Any]) -> Optional[tuple[Any, Any, str]]:
    """The images helper's servicer, if that module is present in this build."""
    try:
        from ..api.containerd.services.images.v1 import images_pb2
        from .images_service import ImagesServicer, add_to_server
    except ImportError as exc:
        log.warning("images service not available: %s", exc)
        return None
    return (ImagesServicer(db, publish), add_to_server,
            images_pb2.DESCRIPTOR.services_by_name["Images"].full_name)


#: Writes that may share a write group on the native transport's loop thread
#: (server/h2/write_groups.py). Their handlers write only through the store's
#: batch() and publish only through App.publish, which both follow the group;
#: a method that did anything else before the commit must not be listed.
GROUPED_METHODS = (
    "/containerd.services.images.v1.Images/Create",
    "/containerd.services.images.v1.Images/Update",
    "/containerd.services.images.v1.Images/Delete",
)


class Server:
    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.db: Optional[MetadataDB] = None
        self.bus = EventBus()
        self.streams = StreamRegistry()
        self.grpc: Any = None  # h2.NativeServer
        self.claim: Optional[SocketClaim] = None
        self.health: Optional[health.HealthServicer] = None
        self.tcp_port: Optional[int] = None
        self.executor: Optional[futures.ThreadPoolExecutor] = None
        self._stop = threading.Event()
        self._sweeper: Optional[threading.Thread] = None

    # -- start ----------------------------------------------------------------
    def start(self) -> None:
        cfg = self.config
        self.db = self._open_db()
        try:
            self._warn_if_damaged()
            self._sweep_expired_leases()
            self.grpc = self._build_server()
            self._listen()
            self.grpc.start()
        except BaseException:
            self._cleanup()
            raise
        self._sweeper = threading.Thread(target=self._sweep_loop, name="lease-expiry", daemon=True)
        self._sweeper.start()
        log.info("serving", extra={"address": cfg.address, "tcp_address": cfg.tcp_address or "-",
                                   "db": cfg.db_path, "version": version_string(), "revision": revision()})
        notify.ready(f"serving {cfg.db_path} on {cfg.address}")

    def _open_db(self) -> MetadataDB:
        cfg = self.config
        parent = os.path.dirname(os.path.abspath(cfg.db_path))
        if not os.path.exists(cfg.db_path) and not cfg.read_only:
            try:
                os.makedirs(parent, mode=0o700, exist_ok=True)
            except OSError as exc:
                raise ServeError(f"cannot create {parent}: {exc.strerror or exc}") from None
        try:
            return MetadataDB(cfg.db_path, read_only=cfg.read_only, create=not cfg.read_only, timeout=1.0)
        except Exception as exc:  # noqa: BLE001 - every failure to open becomes one clear line
            code = EXIT_LOCKED if _held_by_another_process(cfg.db_path) else 1
            raise ServeError(getattr(exc, "detail", "") or str(exc), code) from None

    def _warn_if_damaged(self) -> None:
        """Run the structural check ``boltimages check`` runs (bbolt's tx.Check) before serving,
        and say so loudly when it fails: writing into a damaged file can spread the damage.
        Cost: 0.24 s on a 50,000-image file (450 MB), once per start; we serve anyway, as
        containerd would, because refusing would take every image away from the node."""
        assert self.db is not None
        try:
            problems = self.db.engine.check(max_problems=DAMAGE_REPORT_MAX)
        except Exception as exc:  # noqa: BLE001 - a check that cannot run is itself a finding
            problems = [str(exc)]
        if not problems:
            return
        mode = "read-only" if self.config.read_only else "read-write"
        log.error("the metadata file fails the structural check; serving it %s anyway. Stop, run "
                  "'boltimages check --db %s', and recover with 'boltimages salvage' before writing to it",
                  mode, self.config.db_path, extra={"db": self.config.db_path, "problems": len(problems),
                                                    "first": problems[0]})

    def _build_server(self) -> Any:
        cfg = self.config
        db = self.db
        assert db is not None
        self.executor = futures.ThreadPoolExecutor(max_workers=cfg.worker_count(), thread_name_prefix="grpc")
        # Our own HTTP/2 transport: cheap reads answered on its loop thread
        # without grpcio's per-call thread hand-offs (see server/h2/server.py).
        # grpcio's server was a fallback until the abuse suite
        # (tests/server/test_abuse.py) ran on it: no rapid-reset or stream
        # limit, 632 MiB peak under a PING flood, 911 MiB and a liveness
        # timeout under unread Lists. A fallback that fails it is a liability.
        server = NativeServer(self.executor, max_receive_message_length=cfg.max_recv_message_size,
                              max_send_message_length=cfg.max_send_message_size,
                              log_calls=log.isEnabledFor(logging.DEBUG),
                              limits=Limits(max_concurrent_streams=cfg.max_concurrent_streams,
                                            connection_buffer=cfg.max_connection_buffer,
                                            max_streaming_calls=cfg.max_streaming_calls,
                                            max_header_block=cfg.max_header_list_size,
                                            max_header_list=cfg.max_header_list_size,
                                            send_buffer=cfg.socket_send_buffer))
        if not cfg.read_only:
            server.enable_write_groups(db.open_group, GROUPED_METHODS)
        publish = self.publish
        names = []
        images = _images_servicer(db, publish)
        if images is not None:
            servicer, add, name = images
            add(servicer, server)
            names.append(name)
        namespace_pb2_grpc.add_NamespacesServicer_to_server(NamespacesServicer(db, publish), server)
        leases_pb2_grpc.add_LeasesServicer_to_server(LeasesServicer(db), server)
        version_pb2_grpc.add_VersionServicer_to_server(VersionServicer(), server)
        introspection_pb2_grpc.add_IntrospectionServicer_to_server(
            IntrospectionServicer(default_plugins(), store_uuid(cfg.db_path)), server)
        # Subscribe and Stream each hold a worker for their whole life; the transport's one
        # cap on streaming calls (h2/limits.py, max_streaming_calls) bounds them all together
        events_pb2_grpc.add_EventsServicer_to_server(EventsServicer(self.bus), server)
        streaming_pb2_grpc.add_StreamingServicer_to_server(StreamingServicer(self.streams), server)
        content_root = cfg.content_root or default_content_root(cfg.db_path)
        content_pb2_grpc.add_ContentServicer_to_server(ContentServicer(db, content_root), server)
        snapshots_pb2_grpc.add_SnapshotsServicer_to_server(
            SnapshotsServicer(db, SnapshotKinds(containerd_root(cfg.db_path))), server)
        transfer_pb2_grpc.add_TransferServicer_to_server(TransferServicer(db, publish, self.streams), server)
        containers_pb2_grpc.add_ContainersServicer_to_server(ContainersServicer(db), server)
        self.health = health.HealthServicer(experimental_non_blocking=True)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        names += [d.DESCRIPTOR.services_by_name[s].full_name for d, s in (
            (namespace_pb2, "Namespaces"), (leases_pb2, "Leases"), (version_pb2, "Version"),
            (introspection_pb2, "Introspection"), (events_pb2, "Events"), (content_pb2, "Content"),
            (snapshots_pb2, "Snapshots"), (transfer_pb2, "Transfer"),
            (containers_pb2, "Containers"), (streaming_pb2, "Streaming"))]
        for name in ["", *names]:
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        reflection.enable_server_reflection([*names, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
        return server

    def _listen(self) -> None:
        cfg = self.config
        assert self.grpc is not None
        self.claim = SocketClaim(cfg.address, 0o711 if os.geteuid() == 0 else 0o700)
        # gRPC creates the socket file at bind time; a restrictive umask means it
        # never exists, even for an instant, with wider permissions than 0660
        old = os.umask(0o117)
        try:
            bound = self.grpc.add_insecure_port(f"unix:{cfg.address}")
        except RuntimeError as exc:
            raise ServeError(f"cannot listen on {cfg.address}: {exc}") from None
        finally:
            os.umask(old)
        if not bound:
            raise ServeError(f"cannot listen on {cfg.address}")
        os.chmod(cfg.address, 0o660)
        if cfg.socket_uid >= 0 or cfg.socket_gid >= 0:
            try:
                os.chown(cfg.address, cfg.socket_uid, cfg.socket_gid)
            except OSError as exc:
                raise ServeError(f"cannot chown {cfg.address}: {exc.strerror or exc}") from None
        if cfg.tcp_address:
            check_loopback(cfg.tcp_address)
            try:
                port = self.grpc.add_insecure_port(cfg.tcp_address)
            except RuntimeError as exc:
                raise ServeError(f"cannot listen on {cfg.tcp_address}: {exc}") from None
            if not port:
                raise ServeError(f"cannot listen on {cfg.tcp_address} (address in use?)")
            self.tcp_port = port

    # -- events and lease expiry ------------------------------------------------
    def publish(self, namespace: str, topic: str, event: Any) -> None:
        """Hook handed to servicers; an event that cannot be sent never fails the write that caused it.

        A write running in a group (see store.db.WriteGroup) is not committed
        yet: its event waits for the commit, and is dropped if the group is
        rolled back."""
        group = self.db.active_group() if self.db is not None else None
        if group is not None:
            group.defer(lambda: self.publish(namespace, topic, event))
            return
        try:
            self.bus.publish(namespace, topic, event)
        except Exception as exc:  # noqa: BLE001 - logged; the change itself is already committed
            log.warning("event not published: %s", exc, extra={"topic": topic, "ns": namespace})

    def _sweep_expired_leases(self) -> None:
        if self.db is None or self.config.read_only:
            return
        try:
            gone = remove_expired_leases(self.db, datetime.now(timezone.utc))
        except Exception as exc:  # noqa: BLE001 - retried on the next tick
            log.warning("removing expired leases failed: %s", exc)
            return
        for namespace, lease_id in gone:
            log.info("expired lease removed", extra={"ns": namespace, "lease": lease_id})

    def _sweep_loop(self) -> None:
        while not self._stop.wait(LEASE_SWEEP_SECONDS):
            self._sweep_expired_leases()

    # -- stop -----------------------------------------------------------------
    def wait(self) -> None:
        # Never one untimed wait: Python runs signal handlers only when the
        # main thread comes back to the interpreter. A signal that lands just
        # before the thread blocks (likely while other threads hold the GIL,
        # i.e. under load) interrupts nothing, and an untimed wait would then
        # sleep through SIGTERM for good. Each timeout lets a pending handler run.
        while not self._stop.wait(SIGNAL_POLL_SECONDS):
            pass

    def request_stop(self) -> None:
        self._stop.set()

    def shutdown(self) -> None:
        """Graceful stop: refuse new calls, let running ones finish within the grace period."""
        self._stop.set()
        grace = self.config.grace_period
        log.info("shutting down", extra={"grace_seconds": grace})
        notify.stopping()
        if self.health is not None:
            self.health.enter_graceful_shutdown()
        if self.grpc is not None:
            done = self.grpc.stop(grace)
            # event and progress streams never end on their own; close them so the wait is not the full grace
            self.bus.close()
            self.streams.close()
            # the native transport's own bound is grace + its drain (under a
            # second, see h2/server.py); the rest is slack for a loaded machine
            done.wait(grace + STOP_SLACK_SECONDS)
        if self.executor is not None:
            # gRPC cancels calls still running after the grace period but their
            # handler threads run on; the file must outlive every one of them
            self.executor.shutdown(wait=True)
        self._cleanup()
        log.info("stopped")

    def _cleanup(self) -> None:
        self.bus.close()
        self.streams.close()
        if self.db is not None:
            try:
                self.db.close()
            except Exception as exc:  # noqa: BLE001 - shutting down; report and go on
                log.error("closing %s failed: %s", self.config.db_path, exc)
            self.db = None
        if self.claim is not None:
            self.claim.release()
            self.claim = None


def run(config: ServerConfig) -> int:
    """Serve until SIGTERM/SIGINT; return the process exit status."""
    server = Server(config)

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("signal received", extra={"signal": signal.Signals(signum).name})
        server.request_stop()

    # installed first: a signal during start-up still ends in a clean shutdown
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server.start()
    settle_collector()
    server.wait()
    server.shutdown()
    # Stopped cleanly; only the interpreter's own exit is left. Python puts
    # SIGTERM/SIGINT back to their default (kill) while finalizing, so a
    # repeated signal in that window (a supervisor or `kill` sending it again)
    # would turn this exit 0 into death by signal. Ignored dispositions are
    # left alone by finalization.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    return 0
