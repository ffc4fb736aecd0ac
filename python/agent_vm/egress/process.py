"""The engine as the CLI sees it: is it running, and ending a stray one.

The runner starts it and it exits with QEMU; `status` reports it (a VM
whose proxy died reaches nothing), and cleanup after a stop ends one that
outlived its QEMU (the runner killed before it could).
"""

from __future__ import annotations

import contextlib
import signal
from pathlib import Path

from .. import procs, store
from ..errors import AgentVmError
from ..models import EngineRuntime
from .layout import EgressPaths


def running(vm_dir: Path) -> EngineRuntime | None:
    """The engine's record if that process is alive and ours, else None."""
    paths = EgressPaths(vm_dir)
    try:
        rt = store.load(paths.engine_runtime, EngineRuntime)
    except AgentVmError:
        return None
    if not procs.is_ours(rt.pid, rt.pid_start_time, vm_dir):
        return None
    return rt


def stop(vm_dir: Path) -> None:
    rt = running(vm_dir)
    if rt is not None and rt.pid_start_time is not None:
        procs.signal_if_ours(rt.pid, rt.pid_start_time, vm_dir, signal.SIGTERM)
        if not procs.wait_gone(rt.pid, 3.0):
            procs.signal_if_ours(rt.pid, rt.pid_start_time, vm_dir, signal.SIGKILL)
    paths = EgressPaths(vm_dir)
    for stale in (paths.engine_runtime, paths.socket):
        with contextlib.suppress(FileNotFoundError):
            stale.unlink()
