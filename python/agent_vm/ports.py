"""Port reservation: free on the host and unused by every other VM.

Callers hold the state directory's ports lock around allocation *and* the
write that records the result, so two agent-vm processes never hand out the
same port.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterable

from . import store
from .errors import AgentVmError, PortUnavailable
from .events import warn
from .models import VmConfig
from .paths import StateLayout

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


def taken_by_vms(layout: StateLayout, exclude: str | None = None) -> set[int]:
    """Every port another VM has reserved (vm.json) or is using (runtime.json)."""
    used: set[int] = set()
    for name in store.vm_names(layout):
        if name == exclude:
            continue
        vm = layout.vm(name)
        with contextlib.suppress(AgentVmError):
            cfg = store.load_config(vm)
            used |= {cfg.ssh_port, cfg.agent_port}
        with contextlib.suppress(AgentVmError):
            rt = store.load_runtime(vm)
            used |= {p for p in (rt.ssh_port, rt.agent_port) if p is not None}
    return used


def pick(host: str, wanted: int | None, start: int, taken: set[int], what: str) -> int:
    """Exactly `wanted` if the user pinned it, else the first free from `start`."""
    if wanted is not None:
        return require(host, wanted, taken, what)
    return allocate(host, start, taken)


def recheck(layout: StateLayout, cfg: VmConfig) -> dict[str, int]:
    """Right before QEMU binds them: the VM's ports that another process took
    meanwhile, moved to free ones (pinned ones fail instead). Call with the
    ports lock held; returns the changed fields for the caller to save."""
    taken = taken_by_vms(layout, exclude=cfg.name)
    changed: dict[str, int] = {}
    for what, field_name, pinned in (
        ("SSH", "ssh_port", cfg.ssh_port_pinned),
        ("agent", "agent_port", cfg.agent_port_pinned),
    ):
        port = getattr(cfg, field_name)
        others = taken | {v for k, v in changed.items() if k != field_name}
        if port not in others and is_free(cfg.host_address, port):
            continue
        if pinned:
            require(cfg.host_address, port, others, what)
        new = allocate(cfg.host_address, port + 1, others | {port})
        warn(f"{what} port {port} was taken by another process; using {new} instead", vm=cfg.name)
        changed[field_name] = new
    return changed
