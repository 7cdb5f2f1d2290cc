"""Readiness for a service manager: systemd's notify protocol.

Why: containerd's unit is ``Type=notify``; it says READY=1 once its sockets
accept calls, so units ordered after it never race its socket. A unit for
``boltimages serve`` can do the same. The protocol is one datagram of
``KEY=VALUE`` lines to the unix socket named by ``$NOTIFY_SOCKET`` (a leading
``@`` names a socket in the abstract namespace). Without that variable,
nothing is sent. A failure to send is logged, never fatal: the service
itself works whether or not anyone listens.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Mapping, Optional

log = logging.getLogger("boltimages.server")

NOTIFY_SOCKET_ENV = "NOTIFY_SOCKET"


def notify_address(environ: Mapping[str, str]) -> Optional[str]:
    """The socket address ``$NOTIFY_SOCKET`` names, as Python's socket module
    takes it, or None when unset or unusable."""
    name = environ.get(NOTIFY_SOCKET_ENV, "")
    if name.startswith("@") and len(name) > 1:
        return "\0" + name[1:]
    if name.startswith("/"):
        return name
    # empty, or a form we do not speak (systemd also allows vsock: addresses)
    return None


def notify(state: str, environ: Optional[Mapping[str, str]] = None) -> bool:
    """Send ``state`` (lines such as ``READY=1``); True when it was sent."""
    env = os.environ if environ is None else environ
    address = notify_address(env)
    if address is None:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError as exc:
        log.warning("service manager notification failed: %s", exc,
                    extra={"notify_socket": env.get(NOTIFY_SOCKET_ENV, "")})
        return False
    return True


def ready(status: str) -> bool:
    """The sockets accept calls."""
    return notify(f"READY=1\nSTATUS={status}\nMAINPID={os.getpid()}")


def stopping() -> bool:
    """Shutdown has begun: no new calls, running ones finish."""
    return notify("STOPPING=1\nSTATUS=shutting down")
