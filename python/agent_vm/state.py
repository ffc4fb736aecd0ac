"""The lifecycle state machine and what a VM's state really is right now.

Every change of a VM's runtime record goes through `transition`, which
refuses an illegal move; the helpers below are the moves lifecycle makes.
"""

from __future__ import annotations

import errno
import fcntl
import os
from datetime import UTC, datetime
from pathlib import Path

from . import procs
from .errors import AlreadyRunning, NotRunning
from .models import Runtime, StageTiming, VmState

S = VmState
# Legal transitions; anything else is a bug or a race we refuse.
TRANSITIONS: dict[VmState, frozenset[VmState]] = {
    S.STOPPED: frozenset({S.STARTING}),
    # STOPPED: nothing ran (the build failed, or the start was interrupted
    # before QEMU was spawned).
    # SUSPENDED: a resume that failed before the guest ran again (the
    # snapshot still matches its disks and is kept).
    S.STARTING: frozenset({S.RUNNING, S.FAILED, S.STOPPED, S.SUSPENDED}),
    S.RUNNING: frozenset({S.STOPPING, S.FAILED, S.SUSPENDING}),
    S.STOPPING: frozenset({S.STOPPED, S.FAILED}),
    S.FAILED: frozenset({S.STARTING, S.STOPPED}),
    # RUNNING: the save failed and the guest was continued.
    S.SUSPENDING: frozenset({S.SUSPENDED, S.RUNNING, S.FAILED}),
    # STARTING: resume; STOPPED: the snapshot discarded (stop, reset).
    S.SUSPENDED: frozenset({S.STARTING, S.STOPPED}),
}
LIVE = (S.STARTING, S.RUNNING, S.STOPPING, S.SUSPENDING)


def transition(rt: Runtime, new: VmState, name: str, **fields: object) -> Runtime:
    """A copy of `rt` in state `new` with `fields` set; refuses illegal moves."""
    if new not in TRANSITIONS[rt.state]:
        if rt.state in (S.RUNNING, S.STARTING):
            raise AlreadyRunning(f"VM {name} is {rt.state.value}")
        raise NotRunning(f"VM {name} is {rt.state.value}; cannot go to {new.value}")
    return rt.model_copy(update={"state": new, **fields})


def starting(rt: Runtime, name: str, ssh_port: int, agent_port: int) -> Runtime:
    """A fresh record for a start by this process (the starter, whose lock
    tells others the start is alive)."""
    transition(rt, S.STARTING, name)
    me = os.getpid()
    return Runtime(
        state=S.STARTING,
        ssh_port=ssh_port,
        agent_port=agent_port,
        started_at=datetime.now(UTC),
        starter_pid=me,
        starter_start_time=procs.start_time(me),
    )


def running(rt: Runtime, name: str, stages: list[StageTiming]) -> Runtime:
    return transition(rt, S.RUNNING, name, stages=stages, ready_at=datetime.now(UTC))


def stopping(rt: Runtime, name: str) -> Runtime:
    return transition(rt, S.STOPPING, name)


def stopped(rt: Runtime, name: str) -> Runtime:
    """Nothing of the VM runs any more; what the last start measured stays."""
    return Runtime(
        state=transition(rt, S.STOPPED, name).state,
        stopped_at=datetime.now(UTC),
        stages=rt.stages,
    )


def failed(rt: Runtime, name: str, reason: str) -> Runtime:
    return transition(rt, S.FAILED, name, reason=reason, pid=None, pid_start_time=None)


def suspending(rt: Runtime, name: str) -> Runtime:
    return transition(rt, S.SUSPENDING, name)


def resumed_running(rt: Runtime, name: str) -> Runtime:
    """A save that did not happen: the guest runs on, as before."""
    return transition(rt, S.RUNNING, name)


def suspended(rt: Runtime, name: str, reason: str | None = None) -> Runtime:
    """QEMU is gone and the snapshot holds the VM; `reason` says why a resume
    came back here."""
    return Runtime(
        state=transition(rt, S.SUSPENDED, name).state,
        stopped_at=datetime.now(UTC),
        stages=rt.stages,
        reason=reason,
    )


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

    While another agent-vm holds the VM's lock (a start or a suspend in
    progress) the record is trusted: a start's pid may not be recorded yet,
    a suspend's QEMU exits before the record says suspended. One whose
    agent-vm is gone (killed) no longer holds the lock.
    """
    if rt.state in (S.STARTING, S.SUSPENDING) and lock_held(lock):
        return rt.state, None
    if rt.state in LIVE and not alive(rt, vm_dir):
        return S.FAILED, f"QEMU (pid {rt.pid}) exited unexpectedly while {rt.state.value}"
    if rt.state == S.STARTING:
        return S.FAILED, (
            f"the agent-vm that was starting it is gone (QEMU pid {rt.pid} still runs; "
            "'agent-vm start' recovers it)"
        )
    return rt.state, rt.reason


def settle(rt: Runtime, vm_dir: Path, name: str) -> Runtime:
    """The record as it really is, for a caller that holds the VM's lock.

    Holding the lock proves no other agent-vm is starting or stopping the
    VM, so a recorded start or stop in progress was interrupted, and a
    running VM whose QEMU is gone crashed: both are failed.
    """
    if rt.state in (S.STARTING, S.STOPPING, S.SUSPENDING):
        return failed(rt, name, f"the agent-vm that was {rt.state.value} it is gone")
    if rt.state == S.RUNNING and not alive(rt, vm_dir):
        return failed(rt, name, f"QEMU (pid {rt.pid}) exited unexpectedly")
    return rt
