"""The lifecycle state machine and what a VM's state really is right now."""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

from . import procs
from .errors import AlreadyRunning, NotRunning
from .models import Runtime, VmState

S = VmState
# Legal transitions; anything else is a bug or a race we refuse.
TRANSITIONS: dict[VmState, frozenset[VmState]] = {
    S.STOPPED: frozenset({S.STARTING}),
    S.STARTING: frozenset({S.RUNNING, S.FAILED, S.STOPPING, S.STOPPED}),
    S.RUNNING: frozenset({S.STOPPING, S.FAILED}),
    S.STOPPING: frozenset({S.STOPPED, S.FAILED}),
    S.FAILED: frozenset({S.STARTING, S.STOPPED}),
}


def transition(rt: Runtime, new: VmState, name: str) -> None:
    if new not in TRANSITIONS[rt.state]:
        if rt.state in (S.RUNNING, S.STARTING):
            raise AlreadyRunning(f"VM {name} is {rt.state.value}")
        raise NotRunning(f"VM {name} is {rt.state.value}; cannot go to {new.value}")
    rt.state = new


def lock_held(path: Path) -> bool:
    """Is another process holding this lock file right now?"""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as exc:
        return exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN)
    finally:
        os.close(fd)
    return False


def alive(rt: Runtime, vm_dir: Path) -> bool:
    return procs.is_ours(rt.pid, rt.pid_start_time, vm_dir)


def effective(rt: Runtime, vm_dir: Path, lock: Path) -> tuple[VmState, str | None]:
    """The state to show: a VM whose QEMU vanished behind our back is failed.

    While another agent-vm holds the VM's lock (a start in progress) the
    recorded state is trusted: its pid may not be recorded yet.
    """
    if rt.state in (S.STARTING, S.RUNNING, S.STOPPING) and not alive(rt, vm_dir):
        if rt.state == S.STARTING and lock_held(lock):
            return rt.state, None
        return S.FAILED, f"QEMU (pid {rt.pid}) exited unexpectedly while {rt.state.value}"
    return rt.state, rt.reason
