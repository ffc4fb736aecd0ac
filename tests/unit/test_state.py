"""state: the lifecycle's legal transitions, and the effective state of a VM
(a QEMU that vanished behind our back makes the VM failed)."""

from __future__ import annotations

import fcntl
import itertools
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from agent_vm import procs, state
from agent_vm.errors import AlreadyRunning, NotRunning
from agent_vm.models import Runtime, VmState
from unit_fakes import spawn_exec

S = VmState

# The lifecycle as documented (README, docs/architecture.md), written out here
# independently of state.TRANSITIONS.
LEGAL = {
    (S.STOPPED, S.STARTING),  # start
    (S.STARTING, S.RUNNING),  # ready
    (S.STARTING, S.FAILED),  # timeout, QEMU died
    (S.STARTING, S.STOPPED),  # build failed / interrupted before QEMU ran
    (S.RUNNING, S.STOPPING),  # stop
    (S.RUNNING, S.FAILED),  # QEMU killed behind our back
    (S.STOPPING, S.STOPPED),
    (S.STOPPING, S.FAILED),  # survived SIGKILL
    (S.FAILED, S.STARTING),  # start recovers
    (S.FAILED, S.STOPPED),  # stop cleans up
    (S.RUNNING, S.SUSPENDING),  # suspend
    (S.SUSPENDING, S.SUSPENDED),  # saved, QEMU gone
    (S.SUSPENDING, S.RUNNING),  # QEMU could not save it: the guest runs on
    (S.SUSPENDING, S.FAILED),  # QEMU died while saving
    (S.SUSPENDED, S.STARTING),  # resume (start, up, resume)
    (S.SUSPENDED, S.STOPPED),  # stop, reset: the snapshot discarded
    (S.STARTING, S.SUSPENDED),  # a resume that failed before the guest ran again
}
ALL_PAIRS = list(itertools.product(VmState, VmState))


def test_table_matches_the_documented_lifecycle() -> None:
    table = {(a, b) for a, targets in state.TRANSITIONS.items() for b in targets}
    assert table == LEGAL
    assert set(state.TRANSITIONS) == set(VmState)


@pytest.mark.parametrize(("old", "new"), sorted(LEGAL))
def test_legal_transition(old: VmState, new: VmState) -> None:
    rt = Runtime(state=old)
    assert state.transition(rt, new, "vm").state is new
    assert rt.state is old  # a new record; the old one is untouched


@pytest.mark.parametrize(("old", "new"), [p for p in ALL_PAIRS if p not in LEGAL])
def test_illegal_transition_is_refused(old: VmState, new: VmState) -> None:
    rt = Runtime(state=old)
    expected = AlreadyRunning if old in (S.RUNNING, S.STARTING) else NotRunning
    with pytest.raises(expected) as exc:
        state.transition(rt, new, "vm-0123abcd")
    assert rt.state is old  # unchanged
    assert "vm-0123abcd" in exc.value.message and old.value in exc.value.message


# --- effective state ---------------------------------------------------------------


@pytest.fixture
def live_qemu(tmp_path: Path) -> Iterator[tuple[int, int, Path]]:
    vm_dir = tmp_path / "vm"
    vm_dir.mkdir()
    proc = spawn_exec([sys.executable, "-c", "import time; time.sleep(60)", str(vm_dir)])
    start = procs.start_time(proc.pid)
    assert start is not None
    yield proc.pid, start, vm_dir
    proc.kill()
    proc.wait()


def test_running_with_live_qemu_is_running(live_qemu: tuple[int, int, Path]) -> None:
    pid, start, vm_dir = live_qemu
    rt = Runtime(state=S.RUNNING, pid=pid, pid_start_time=start)
    assert state.effective(rt, vm_dir, vm_dir / "lock") == (S.RUNNING, None)


@pytest.mark.parametrize("recorded", [S.RUNNING, S.STARTING, S.STOPPING])
def test_vanished_qemu_is_failed(tmp_path: Path, recorded: VmState) -> None:
    rt = Runtime(state=recorded, pid=2**22 + 12345, pid_start_time=1)
    eff, reason = state.effective(rt, tmp_path, tmp_path / "lock")
    assert eff is S.FAILED
    assert reason == f"QEMU (pid {2**22 + 12345}) exited unexpectedly while {recorded.value}"


def test_reused_pid_is_failed(live_qemu: tuple[int, int, Path]) -> None:
    pid, start, vm_dir = live_qemu
    rt = Runtime(state=S.RUNNING, pid=pid, pid_start_time=start + 1)
    assert state.effective(rt, vm_dir, vm_dir / "lock")[0] is S.FAILED


def test_starting_under_anothers_lock_is_trusted(tmp_path: Path) -> None:
    """A start in progress may not have recorded its pid yet."""
    lock = tmp_path / "vm.lock"
    rt = Runtime(state=S.STARTING)
    assert state.effective(rt, tmp_path, lock)[0] is S.FAILED  # no lock file at all
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        assert not state.lock_held(lock)
        fcntl.flock(fd, fcntl.LOCK_EX)
        assert state.lock_held(lock)
        assert state.effective(rt, tmp_path, lock) == (S.STARTING, None)
        # A running VM whose QEMU is gone is failed, lock or not.
        assert state.effective(Runtime(state=S.RUNNING), tmp_path, lock)[0] is S.FAILED
    finally:
        os.close(fd)
    assert not state.lock_held(lock)


@pytest.mark.parametrize("recorded", [S.STOPPED, S.FAILED])
def test_stopped_and_failed_are_as_recorded(tmp_path: Path, recorded: VmState) -> None:
    rt = Runtime(state=recorded, reason="why" if recorded is S.FAILED else None)
    assert state.effective(rt, tmp_path, tmp_path / "lock") == (recorded, rt.reason)


def test_a_start_whose_agent_vm_is_gone_is_failed(live_qemu: tuple[int, int, Path]) -> None:
    """Killed with SIGKILL while starting, agent-vm leaves QEMU running and the
    record "starting"; its lock died with it, so that start is over."""
    pid, start, vm_dir = live_qemu
    rt = Runtime(state=S.STARTING, pid=pid, pid_start_time=start, starter_pid=2**22 + 1)
    eff, reason = state.effective(rt, vm_dir, vm_dir / "lock")
    assert eff is S.FAILED and reason is not None
    assert "agent-vm that was starting it is gone" in reason and str(pid) in reason


@pytest.mark.parametrize("recorded", [S.STARTING, S.STOPPING])
def test_settle_under_our_lock_fails_an_interrupted_start_or_stop(
    live_qemu: tuple[int, int, Path], recorded: VmState
) -> None:
    pid, start, vm_dir = live_qemu
    rt = Runtime(state=recorded, pid=pid, pid_start_time=start)
    settled = state.settle(rt, vm_dir, "vm")
    assert settled.state is S.FAILED and settled.pid is None
    assert settled.reason == f"the agent-vm that was {recorded.value} it is gone"


def test_settle_keeps_a_live_running_vm(live_qemu: tuple[int, int, Path]) -> None:
    pid, start, vm_dir = live_qemu
    rt = Runtime(state=S.RUNNING, pid=pid, pid_start_time=start)
    assert state.settle(rt, vm_dir, "vm") == rt
    gone = Runtime(state=S.RUNNING, pid=pid, pid_start_time=start + 1)
    assert state.settle(gone, vm_dir, "vm").state is S.FAILED


def test_starting_records_the_starter() -> None:
    rt = state.starting(Runtime(state=S.FAILED, reason="old"), "vm", 2222, 8000)
    assert rt.state is S.STARTING and rt.reason is None and rt.pid is None
    assert rt.starter_pid == os.getpid()
    assert rt.starter_start_time == procs.start_time(os.getpid())
    assert (rt.ssh_port, rt.agent_port) == (2222, 8000)
