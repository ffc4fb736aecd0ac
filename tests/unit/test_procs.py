"""procs: a pid is ours only with the recorded start time *and* a command
line naming the VM directory; nothing else is ever signalled."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from agent_vm import procs
from unit_fakes import spawn_exec


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """An unrelated process (sleep), like one that reused QEMU's pid."""
    proc = spawn_exec(["sleep", "60"])
    yield proc
    proc.kill()
    proc.wait()


@pytest.fixture
def fake_qemu(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """A process whose command line names the VM directory, as QEMU's does."""
    vm_dir = tmp_path / "vms" / "main-0123abcd"
    vm_dir.mkdir(parents=True)
    proc = spawn_exec(
        [sys.executable, "-c", "import time; time.sleep(60)", "-pidfile", f"{vm_dir}/qemu.pid"]
    )
    yield proc, vm_dir
    proc.kill()
    proc.wait()


def test_start_time_is_field_22_of_stat(sleeper: subprocess.Popen[bytes]) -> None:
    raw = Path(f"/proc/{sleeper.pid}/stat").read_text()
    assert procs.start_time(sleeper.pid) == int(raw.rsplit(")", 1)[1].split()[19])
    assert procs.start_time(os.getpid()) is not None
    assert procs.start_time(2**22 + 12345) is None  # above pid_max: never a process


def test_unrelated_process_is_not_ours(sleeper: subprocess.Popen[bytes], tmp_path: Path) -> None:
    start = procs.start_time(sleeper.pid)
    assert procs.is_alive(sleeper.pid)
    assert not procs.is_ours(sleeper.pid, start, tmp_path / "vms" / "main-0123abcd")
    assert not procs.signal_if_ours(sleeper.pid, start or 0, tmp_path, signal.SIGKILL)
    assert sleeper.poll() is None  # still running: it was not signalled


def test_our_process_is_ours(fake_qemu: tuple[subprocess.Popen[bytes], Path]) -> None:
    proc, vm_dir = fake_qemu
    start = procs.start_time(proc.pid)
    assert procs.is_ours(proc.pid, start, vm_dir)
    assert f"{vm_dir}/qemu.pid" in procs.cmdline(proc.pid)


def test_start_time_mismatch_is_not_ours(fake_qemu: tuple[subprocess.Popen[bytes], Path]) -> None:
    """Same pid and command line, other start time: a reused pid."""
    proc, vm_dir = fake_qemu
    start = procs.start_time(proc.pid)
    assert start is not None
    assert not procs.is_ours(proc.pid, start + 1, vm_dir)
    assert not procs.signal_if_ours(proc.pid, start + 1, vm_dir, signal.SIGKILL)
    assert proc.poll() is None


def test_another_vms_process_is_not_ours(
    fake_qemu: tuple[subprocess.Popen[bytes], Path],
) -> None:
    proc, vm_dir = fake_qemu
    other = vm_dir.parent / "other-0123abcd"
    assert not procs.is_ours(proc.pid, procs.start_time(proc.pid), other)


def test_nothing_recorded_is_not_ours(tmp_path: Path) -> None:
    assert not procs.is_ours(None, 123, tmp_path)
    assert not procs.is_ours(os.getpid(), None, tmp_path)


def test_signal_if_ours_signals_our_process(
    fake_qemu: tuple[subprocess.Popen[bytes], Path],
) -> None:
    proc, vm_dir = fake_qemu
    start = procs.start_time(proc.pid)
    assert start is not None
    assert procs.signal_if_ours(proc.pid, start, vm_dir, signal.SIGTERM)
    assert proc.wait(timeout=10) == -signal.SIGTERM


def test_a_zombie_is_not_alive(tmp_path: Path) -> None:
    proc = subprocess.Popen(["true"])
    try:
        # Not yet reaped: a zombie until we wait for it.
        assert procs.wait_gone(proc.pid, timeout=10)
        assert not procs.is_alive(proc.pid)
    finally:
        proc.wait()


def test_wait_gone_times_out_for_a_live_process(sleeper: subprocess.Popen[bytes]) -> None:
    assert not procs.wait_gone(sleeper.pid, timeout=0.1)
    sleeper.kill()
    assert procs.wait_gone(sleeper.pid, timeout=10)


def test_cmdline_of_a_missing_process() -> None:
    assert procs.cmdline(2**22 + 12345) == []
    assert not procs.is_alive(2**22 + 12345)


def test_cmdline_with_odd_bytes(tmp_path: Path) -> None:
    odd = tmp_path / "a b\udcff"
    proc = spawn_exec([sys.executable, "-c", "import time; time.sleep(60)", str(odd)])
    try:
        assert procs.is_ours(proc.pid, procs.start_time(proc.pid), odd)
    finally:
        proc.kill()
        proc.wait()


def test_an_empty_command_line_mid_exec_is_waited_out(
    fake_qemu: tuple[subprocess.Popen[bytes], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Around an exec the kernel shows an empty cmdline for a moment; that
    must not read as "not ours" (a QEMU would be left running)."""
    proc, vm_dir = fake_qemu
    real = procs.cmdline
    reads: list[int] = []

    def empty_at_first(pid: int) -> list[str]:
        reads.append(pid)
        return [] if len(reads) <= 3 else real(pid)

    monkeypatch.setattr(procs, "cmdline", empty_at_first)
    assert procs.is_ours(proc.pid, procs.start_time(proc.pid), vm_dir)
    assert len(reads) == 4


def test_an_empty_command_line_that_stays_empty_is_not_ours(
    fake_qemu: tuple[subprocess.Popen[bytes], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    proc, vm_dir = fake_qemu
    monkeypatch.setattr(procs, "cmdline", lambda pid: [])
    monkeypatch.setattr(procs, "EXEC_SETTLE", 0.05)
    assert not procs.is_ours(proc.pid, procs.start_time(proc.pid), vm_dir)


CHILD = """
import os, sys, time
from agent_vm import procs
print(procs.die_with_parent(int(sys.argv[1])), flush=True)
time.sleep(60)
"""


def _child_of_a_shell(expected_parent: str) -> tuple[subprocess.Popen[str], int]:
    """A shell that starts the child in the background and waits; the
    child's pid and first line (die_with_parent's answer)."""
    sh = subprocess.Popen(
        [
            "sh",
            "-c",
            f'"$1" -c "$2" {expected_parent} & echo $!; wait',
            "sh",
            sys.executable,
            CHILD,
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=os.environ | {"PYTHONPATH": str(Path(procs.__file__).parents[1])},
        start_new_session=True,
    )
    assert sh.stdout is not None
    child = int(sh.stdout.readline())
    return sh, child


def test_a_process_bound_to_its_parent_dies_with_it() -> None:
    # The egress engine: a runner killed while it starts must not leave it.
    sh, child = _child_of_a_shell("$$")
    assert sh.stdout is not None
    assert sh.stdout.readline().strip() == "True"
    sh.kill()
    sh.wait()
    assert procs.wait_gone(child, 10), "the child outlived its parent"


def test_a_parent_already_gone_is_reported() -> None:
    sh, child = _child_of_a_shell("1")  # not its parent: as if re-parented
    assert sh.stdout is not None
    assert sh.stdout.readline().strip() == "False"
    os.kill(child, signal.SIGKILL)
    sh.wait()
