"""`start --foreground` / `up --foreground`: stay while the VM runs.

This is what the NixOS host module's systemd units run (Type=notify,
Restart=on-failure). Who owns what (docs/architecture.md, "Supervision"):
systemd restarts a VM that failed; this loop only tells systemd how the VM
is doing and turns SIGTERM into a clean ACPI power-down; the runner
supervises its own virtiofsd helpers.
"""

from __future__ import annotations

import os
import time

from . import lifecycle, procs, sdnotify, state, store
from .context import Context
from .errors import GuestFailed
from .events import EventKind, Severity, emit
from .models import VmState
from .paths import VmPaths

POLL = 0.5
# How long to wait for a `stop` that holds the VM's lock to finish before
# judging how QEMU went away (its power-down, SIGTERM and SIGKILL waits).
STOP_SETTLE = 120.0


def supervise(ctx: Context, vm: VmPaths, timeouts: lifecycle.StopTimeouts | None = None) -> None:
    """Return when the VM was stopped on purpose (SIGTERM here, or an
    `agent-vm stop` elsewhere); raise GuestFailed when QEMU went away by
    itself, for systemd to restart the VM."""
    rt = store.load_runtime(vm)
    sdnotify.notify(
        ready="1",
        mainpid=str(os.getpid()),
        status=f"VM {vm.name} running (ssh port {rt.ssh_port}, agent port {rt.agent_port})",
    )
    try:
        while procs.is_ours(rt.pid, rt.pid_start_time, vm.dir):
            time.sleep(POLL)
    except KeyboardInterrupt:
        sdnotify.notify(stopping="1", status=f"powering VM {vm.name} down")
        lifecycle.stop(ctx, vm, timeouts)
        return
    with ctx.lock(vm.name, wait=STOP_SETTLE):
        current = store.load_runtime(vm)
        if current.pid != rt.pid or current.state != VmState.RUNNING:
            # Someone stopped, suspended (or restarted) the VM deliberately:
            # not a failure, so systemd does not restart (or resume) it.
            how = "suspended" if current.state == VmState.SUSPENDED else "stopped"
            sdnotify.notify(stopping="1", status=f"VM {vm.name} was {how}")
            emit(EventKind.VM_STOPPED, f"VM {vm.name} was {how}; supervision ends", vm=vm.name)
            return
        reason = "QEMU exited while the VM was supervised"
        store.save(vm.runtime, state.failed(current, vm.name, reason))
    emit(EventKind.VM_FAILED, f"VM {vm.name}: {reason}", severity=Severity.INFO, vm=vm.name)
    raise GuestFailed(f"VM {vm.name}: {reason}", hint=f"see {vm.serial_log}")
