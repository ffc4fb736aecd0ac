"""readiness: the staged wait (QEMU -> SSH -> agent), with a short backoff,
a check that QEMU is alive, and a timeout that names the stage."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from agent_vm import agent_secrets, health, qmp, readiness, ssh
from agent_vm.errors import GuestFailed, StartTimeout
from agent_vm.paths import StateLayout, VmPaths
from unit_fakes import vm_config


@pytest.fixture
def vm(tmp_path: Path) -> VmPaths:
    vm = StateLayout(tmp_path).vm("main-0123abcd")
    vm.dir.mkdir(parents=True)
    return vm


def probe_for(
    vm: VmPaths, proc: subprocess.Popen[bytes], timeout: float, accel: str = "tcg"
) -> readiness.Probe:
    return readiness.Probe(
        vm, vm_config(), proc, 2222, 8000, time.monotonic() + timeout, timeout, accel
    )


@pytest.fixture
def alive_proc() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(["sleep", "60"])
    yield proc
    proc.kill()
    proc.wait()


def test_all_stages_in_order(
    vm: VmPaths, alive_proc: subprocess.Popen[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    vm.pidfile.write_text("123\n")
    monkeypatch.setattr(qmp, "answers", lambda p: calls.append("qmp") or True)
    monkeypatch.setattr(ssh, "banner", lambda h, p: calls.append("banner") or True)
    monkeypatch.setattr(ssh, "login_works", lambda *a, **k: (calls.append("login") or True, ""))
    token = agent_secrets.prepare(vm)
    monkeypatch.setattr(
        health, "agent_healthy", lambda h, p, t: calls.append(f"agent {p} {t}") or True
    )
    stages = readiness.wait_ready(probe_for(vm, alive_proc, 10))
    assert [s.stage for s in stages] == ["qemu", "ssh", "agent"]
    assert all(s.ok and s.seconds >= 0 for s in stages)
    # The agent is asked with the VM's own token.
    assert calls == ["qmp", "banner", "login", f"agent 8000 {token}"]
    assert readiness.qemu_pid(vm) == 123


def test_qemu_dying_is_reported_at_once(vm: VmPaths) -> None:
    proc = subprocess.Popen(["sh", "-c", "echo 'qemu: boom' >&2; exit 1"], stderr=subprocess.PIPE)
    proc.wait()
    vm.runner_log.write_text("qemu: boom\n")
    t0 = time.monotonic()
    with pytest.raises(GuestFailed) as exc:
        readiness.wait_ready(probe_for(vm, proc, 30))
    assert time.monotonic() - t0 < 5
    assert exc.value.message == "QEMU exited with code 1 while the VM was starting"
    assert exc.value.detail == "qemu: boom"


def test_timeout_names_the_stage_and_shows_the_serial_log(
    vm: VmPaths, alive_proc: subprocess.Popen[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    vm.pidfile.write_text("1\n")
    vm.serial_log.write_text("Booting...\nKernel panic - not syncing\n")
    monkeypatch.setattr(qmp, "answers", lambda p: True)
    monkeypatch.setattr(ssh, "banner", lambda h, p: False)
    with pytest.raises(StartTimeout) as exc:
        readiness.wait_ready(probe_for(vm, alive_proc, 0.3))
    assert exc.value.message == ("VM main-0123abcd was not ready after 0.3s: stage 'ssh' timed out")
    assert exc.value.hint is not None and "likely cause" in exc.value.hint
    assert "slow TCG emulation" in exc.value.hint
    assert exc.value.detail == "Booting...\nKernel panic - not syncing"


def test_a_foreign_host_key_is_refused(
    vm: VmPaths, alive_proc: subprocess.Popen[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    vm.pidfile.write_text("1\n")
    monkeypatch.setattr(qmp, "answers", lambda p: True)
    monkeypatch.setattr(ssh, "banner", lambda h, p: True)
    monkeypatch.setattr(
        ssh, "login_works", lambda *a, **k: (False, "Host key verification failed.")
    )
    with pytest.raises(GuestFailed, match="host key that is not its own"):
        readiness.wait_ready(probe_for(vm, alive_proc, 10))


def test_qemu_pid_of_a_bad_pidfile(vm: VmPaths) -> None:
    assert readiness.qemu_pid(vm) is None
    vm.pidfile.write_text("garbage")
    assert readiness.qemu_pid(vm) is None


def test_a_silent_console_under_kvm_is_a_kvm_hang(
    vm: VmPaths,
    alive_proc: subprocess.Popen[bytes],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A kernel KVM cannot run prints nothing; that is said within seconds,
    not blamed on slow TCG at the readiness timeout."""
    monkeypatch.setattr(readiness, "KVM_SILENCE_SECONDS", 0.3)
    vm.pidfile.write_text("1\n")
    vm.serial_log.write_bytes(b"")
    monkeypatch.setattr(qmp, "answers", lambda p: True)
    monkeypatch.setattr(ssh, "banner", lambda h, p: False)
    t0 = time.monotonic()
    with pytest.raises(readiness.KvmSilent) as exc:
        readiness.wait_ready(probe_for(vm, alive_proc, 30, accel="kvm"))
    assert time.monotonic() - t0 < 5
    assert exc.value.exit_code == 15  # a GuestFailed when the user forced KVM
    assert exc.value.message == (
        "VM main-0123abcd printed nothing on its console for 0.3s under KVM: "
        "Linux does not run under KVM here"
    )
    assert exc.value.hint is not None and "AGENT_VM_ACCEL" in exc.value.hint


def test_a_talking_console_under_kvm_is_waited_for(
    vm: VmPaths,
    alive_proc: subprocess.Popen[bytes],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(readiness, "KVM_SILENCE_SECONDS", 0.1)
    vm.pidfile.write_text("1\n")
    vm.serial_log.write_text("[    0.0] Linux version 6.1\n")
    monkeypatch.setattr(qmp, "answers", lambda p: True)
    monkeypatch.setattr(ssh, "banner", lambda h, p: False)
    with pytest.raises(StartTimeout) as exc:
        readiness.wait_ready(probe_for(vm, alive_proc, 0.5, accel="kvm"))
    assert exc.value.hint is not None
    assert "TCG emulation" not in exc.value.hint.replace("AGENT_VM_ACCEL=tcg", "")
    assert "stalled under KVM" in exc.value.hint


def test_tcg_never_checks_the_console(
    vm: VmPaths,
    alive_proc: subprocess.Popen[bytes],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(readiness, "KVM_SILENCE_SECONDS", 0.0)
    vm.pidfile.write_text("1\n")
    monkeypatch.setattr(qmp, "answers", lambda p: True)
    monkeypatch.setattr(ssh, "banner", lambda h, p: False)
    with pytest.raises(StartTimeout):
        readiness.wait_ready(probe_for(vm, alive_proc, 0.3))
