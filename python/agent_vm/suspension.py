"""Suspend and resume: what lifecycle's `suspend` and `start`-of-a-suspended
VM do once they hold the VM's lock and have checked its state.

Suspend: QEMU saves the stopped guest into `snapshot.vmstate.partial`
(migration.save), quits, and only then is the file renamed and
`snapshot.json` written with the stamps of the disks as QEMU left them.

Resume: the snapshot is checked against its disks and runner
(snapshot.check), the recorded runner is started paused (`-incoming
defer`) on the recorded accelerator, the state is loaded, the snapshot is
deleted, and only then is the guest continued: from that moment its disks
move on and the snapshot could never be used again. Then the clock is
stepped (guestclock) and the same readiness stages as a boot follow (SSH
with the pinned key, the agent). A resume that fails before `cont` leaves
the VM suspended with its snapshot; after, it fails like a boot.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from . import (
    fsutil,
    guestclock,
    migration,
    procs,
    quarantine,
    readiness,
    snapshot,
    state,
    store,
    tools,
)
from .egress import process as egress_process
from .errors import CommandFailed, GitError, GuestFailed, StopFailed
from .events import EventKind, Severity, emit, warn
from .models import Runtime, Snapshot, StageTiming, VmConfig, WorkspaceMode
from .paths import VmPaths
from .qmp import Qmp, QmpError

INCOMING_ENV = "AGENT_VM_INCOMING"
ACCEL_ENV = "AGENT_VM_ACCEL"
# Saving a few GiB takes seconds; the bound is for a QEMU that hangs.
SAVE_TIMEOUT = 600.0
QUIT_TIMEOUT = 30.0
QMP_TIMEOUT = 30.0
# The guest agent runs hwclock before it answers: 8-12 s seen under a loaded
# TCG host; a guest without the agent costs a resume this long.
CLOCK_TIMEOUT = 30.0
AGENT_OPEN_WAIT = 3.0


def save(
    vm: VmPaths, cfg: VmConfig, rt: Runtime, quarantine_lock: Path
) -> tuple[Runtime, Snapshot]:
    """Save the running VM `rt` and stop its QEMU (the caller holds the lock
    and has checked that it runs)."""
    assert rt.pid is not None and rt.pid_start_time is not None
    pid, start_t = rt.pid, rt.pid_start_time
    runner = str(vm.runner_link.resolve())
    partial = snapshot.partial(vm)
    with contextlib.suppress(FileNotFoundError):
        partial.unlink()
    try:
        q = Qmp(vm.qmp_socket, timeout=QMP_TIMEOUT)
    except (QmpError, OSError) as exc:
        raise GuestFailed(f"VM {vm.name}'s QEMU does not answer on QMP: {exc}") from None
    with q:
        # Before any change: a VM QEMU cannot save stays as it is.
        reasons = migration.blockers(q)
        if reasons:
            raise migration.refusal(reasons)
        accel = migration.accelerator(q)
        workspace = _workspace_refs(vm, quarantine_lock, cfg, rt.ssh_port or cfg.ssh_port)
        rt = state.suspending(rt, vm.name)
        store.save(vm.runtime, rt)
        emit(EventKind.VM_SUSPENDING, f"suspending VM {vm.name}", vm=vm.name)
        t0 = time.monotonic()
        try:
            migration.save(q, Path(partial.name), SAVE_TIMEOUT)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                partial.unlink()
            store.save(vm.runtime, state.resumed_running(rt, vm.name))
            raise
        with contextlib.suppress(QmpError, OSError):
            q.execute("quit")
    if not procs.wait_gone(pid, QUIT_TIMEOUT) and not procs.terminate(
        pid, start_t, vm.dir, grace_term=5.0
    ):
        raise StopFailed(f"QEMU (pid {pid}) survived SIGKILL after saving the VM")
    # The runner stops the egress proxy with QEMU; this is for one that
    # outlived it. A resume's runner starts a new one.
    egress_process.stop(vm.dir)
    fsutil.remove(*vm.qemu_leftovers)
    os.rename(partial, vm.snapshot_state)
    snap = snapshot.record(
        vm, runner, accel, cfg.memory_mib, time.monotonic() - t0, workspace=workspace
    )
    rt = state.suspended(rt, vm.name)
    store.save(vm.runtime, rt)
    emit(
        EventKind.VM_SUSPENDED,
        f"VM {vm.name} suspended ({snap.size_bytes / 2**20:.0f} MiB "
        f"in {snap.suspend_seconds:.1f}s)",
        severity=Severity.NOTICE,
        vm=vm.name,
        size_bytes=snap.size_bytes,
        seconds=snap.suspend_seconds,
    )
    return rt, snap


def _workspace_refs(vm: VmPaths, lock: Path, cfg: VmConfig, port: int) -> dict[str, str] | None:
    """A disk workspace is read once more just before the guest is saved, so
    that diff, pull and destroy can read the suspended VM's work (a commit
    made in the moment between this and the save is kept, but only a
    resume shows it)."""
    if cfg.workspace_mode != WorkspaceMode.DISK:
        return None
    try:
        return quarantine.record(vm, lock, cfg, port)
    except (GitError, CommandFailed) as exc:
        warn(
            f"VM {vm.name}'s workspace could not be read before the suspend ({exc.message}); "
            "diff, pull and destroy will need it resumed",
            vm=vm.name,
        )
        return None


def _timed(stage: Literal["restore", "clock"], fn: Callable[[], None]) -> StageTiming:
    t0 = time.monotonic()
    fn()
    return StageTiming(stage=stage, seconds=round(time.monotonic() - t0, 3), ok=True)


def restore(vm: VmPaths, cfg: VmConfig, rt: Runtime, snap: Snapshot, timeout: float) -> Runtime:
    """Resume the suspended VM `rt` from `snap` (already checked); returns
    the running record. On a failure before the guest was continued the VM
    is left suspended, snapshot kept, and the error raised."""
    rt = state.starting(rt, vm.name, cfg.ssh_port, cfg.agent_port)
    store.save(vm.runtime, rt)
    emit(EventKind.VM_RESUMING, f"resuming VM {vm.name}", vm=vm.name)
    deadline = time.monotonic() + timeout
    fsutil.remove(*vm.qemu_leftovers)
    proc = None
    continued = False
    try:
        with open(vm.runner_log, "ab") as log:
            proc = tools.spawn(
                [str(vm.runner)], log=log, env={ACCEL_ENV: snap.accel, INCOMING_ENV: "defer"}
            )
        rt = rt.model_copy(update={"pid": proc.pid, "pid_start_time": procs.start_time(proc.pid)})
        store.save(vm.runtime, rt)
        probe = readiness.Probe(vm, cfg, proc, cfg.ssh_port, cfg.agent_port, deadline, timeout)
        stages = [readiness.wait_qemu(probe)]
        with Qmp(vm.qmp_socket, timeout=QMP_TIMEOUT) as q:
            stages.append(
                _timed(
                    "restore",
                    lambda: migration.load(
                        q, Path(vm.snapshot_state.name), max(1.0, deadline - time.monotonic())
                    ),
                )
            )
            # From `cont` on the disks move on: the snapshot must be gone
            # first, so that nothing can ever resume it a second time.
            snapshot.discard(vm, keep_memory=True)
            emit(
                EventKind.SNAPSHOT_DISCARDED,
                "snapshot loaded and deleted",
                severity=Severity.DEBUG,
                vm=vm.name,
            )
            q.execute("cont")
            continued = True
            # virtio-serial restores the guest's open ports in a timer that
            # fires once the guest runs: allow it a moment.
            seen_by = time.monotonic() + AGENT_OPEN_WAIT
            while not (listening := guestclock.agent_listening(q)) and (time.monotonic() < seen_by):
                time.sleep(0.05)
        # Setting the clock (the guest agent runs hwclock, seconds under
        # TCG) overlaps the SSH and agent checks; ready waits for both.
        clock = _ClockSetter(vm, listening)
        clock.start()
        stages += readiness.wait_guest(probe)
        stages.insert(-2, clock.join())
    except BaseException as exc:
        if proc is not None:
            start_t = procs.start_time(proc.pid)
            if start_t is not None:
                procs.terminate(proc.pid, start_t, vm.dir, grace_term=3.0)
            proc.poll()
        fsutil.remove(*vm.qemu_leftovers)
        if not continued and snapshot.exists(vm):
            reason = getattr(exc, "message", None) or type(exc).__name__
            store.save(
                vm.runtime,
                state.suspended(store.load_runtime(vm), vm.name, f"resume failed: {reason}"),
            )
            if isinstance(exc, QmpError):
                raise GuestFailed(f"resuming VM {vm.name} failed: {exc}") from None
        raise
    return state.running(readiness.adopt_qemu_pid(vm, rt), vm.name, stages)


class _ClockSetter(threading.Thread):
    def __init__(self, vm: VmPaths, listening: bool) -> None:
        super().__init__(daemon=True)
        self.vm = vm
        self.listening = listening
        self.error: guestclock.ClockNotSet | None = None
        self.t0 = time.monotonic()
        self.seconds = 0.0

    def run(self) -> None:
        try:
            if not self.listening:
                raise guestclock.ClockNotSet(
                    "the guest runs no QEMU guest agent (agent-vm.resume.setClock)"
                )
            guestclock.set_to_host_time(self.vm.guest_agent_socket, CLOCK_TIMEOUT)
        except guestclock.ClockNotSet as exc:
            self.error = exc
        self.seconds = time.monotonic() - self.t0

    def join(self, timeout: float | None = None) -> StageTiming:  # type: ignore[override]
        super().join(CLOCK_TIMEOUT + 1.0)
        if self.error is not None:
            # The guest's own business (no guest agent, a hostile guest): it
            # runs on with its clock behind, and the user is told.
            warn(
                f"VM {self.vm.name}'s clock was not set after the resume ({self.error}); "
                "it is behind by the time it was suspended",
                vm=self.vm.name,
            )
        return StageTiming(stage="clock", seconds=round(self.seconds, 3), ok=self.error is None)
