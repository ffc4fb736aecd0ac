"""Tell systemd how a supervised VM is doing (sd_notify protocol).

The NixOS host module runs `agent-vm up --foreground` as a `Type=notify`
unit: READY=1 once the VM answers SSH and the agent, so units ordered after
it start against a VM that works, and `systemctl start` returns only then.
Outside systemd (no $NOTIFY_SOCKET) this does nothing.
"""

from __future__ import annotations

import os
import socket

ENV = "NOTIFY_SOCKET"


def notify(**fields: str) -> bool:
    """Send `KEY=value` lines (READY="1", STATUS="…"); True if sent."""
    address = os.environ.get(ENV)
    if not address or not fields:
        return False
    # A leading '@' is Linux's abstract namespace: a NUL byte on the wire.
    target = "\0" + address[1:] if address.startswith("@") else address
    payload = "\n".join(f"{k.upper()}={v}" for k, v in fields.items()).encode()
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(target)
            sock.sendall(payload)
        except OSError:
            return False
    return True
