"""Port allocation: free on the host and unused by every other VM.

Callers hold the state directory's ports lock around allocation *and* the
write that records the result, so two agent-vm processes never hand out the
same port.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable

from .errors import PortUnavailable

PORT_MAX = 65535


def is_free(host: str, port: int) -> bool:
    """Can QEMU bind host:port right now?

    SO_REUSEADDR as QEMU sets it: a port in TIME_WAIT counts as free, a
    listener (also one on 0.0.0.0) as taken.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def allocate(host: str, start: int, taken: Iterable[int]) -> int:
    """The first port >= start that no VM uses and the host has free."""
    used = set(taken)
    for port in range(start, PORT_MAX + 1):
        if port not in used and is_free(host, port):
            return port
    raise PortUnavailable(
        f"no free port from {start} to {PORT_MAX} on {host}",
        hint="free some ports or choose another start with --port",
    )


def require(host: str, port: int, taken: Iterable[int], what: str) -> int:
    """A port the user pinned: it must be free, or a clear error."""
    if port in set(taken):
        raise PortUnavailable(f"{what} port {port} is already used by another VM")
    if not is_free(host, port):
        raise PortUnavailable(
            f"{what} port {port} on {host} is in use by another process",
            hint="stop that process or choose another port",
        )
    return port
