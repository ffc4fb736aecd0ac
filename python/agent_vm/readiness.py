"""Waiting for a starting VM: QEMU up -> SSH answers -> agent healthy.

Each stage polls with a short, bounded backoff (so readiness is noticed
within a fraction of a second) and checks that QEMU is still alive, so a
guest that dies is reported at once rather than at the timeout. Under KVM
it also checks that the guest's console has said something within a few
seconds: a kernel that KVM cannot run hangs silently (`KvmSilent`).
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass

from . import agent_secrets, health, procs, qmp, ssh
from .errors import GuestFailed, StartTimeout
from .events import REPORTER, EventKind, Severity, emit
from .fsutil import tail
from .models import Runtime, StageTiming, VmConfig
from .paths import VmPaths

BACKOFF_START = 0.05
BACKOFF_MAX = 0.2
# Under KVM the kernel's first console lines come within a second of QEMU
# answering; this much silence means it hangs.
KVM_SILENCE_SECONDS = 10.0

STAGE_LABELS = {
    "qemu": "[1/3] starting QEMU",
    "ssh": "[2/3] guest booting, waiting for SSH",
    "agent": "[3/3] waiting for the agent service",
}

LIKELY_CAUSE = {
    "qemu": "QEMU did not come up; see {runner_log}",
    "ssh": "the guest did not bring up sshd in time ({booting}, or sshd failed); "
    "see the serial log {serial_log}",
    "agent": "the agent service did not answer on port {agent_port} (a 200 to the VM's token); "
    "see 'agent-vm logs' and the serial log {serial_log}",
}


class KvmSilent(GuestFailed):
    """Under KVM the guest printed nothing: Linux does not run under KVM on
    this host. lifecycle falls back to TCG unless the user forced KVM."""


# Why a guest can be slow to bring up sshd, by accelerator.
_BOOTING = {
    "tcg": "still booting under slow TCG emulation",
    "kvm": "the guest stalled under KVM (AGENT_VM_ACCEL=tcg runs it under emulation)",
}


@dataclass
class Probe:
    vm: VmPaths
    cfg: VmConfig
    proc: subprocess.Popen[bytes]
    ssh_port: int
    agent_port: int
    deadline: float
    timeout: float
    accel: str = "tcg"
    # Set once QEMU answers, under KVM: by then the console must have spoken.
    console_deadline: float | None = None

    def check_alive(self) -> None:
        code = self.proc.poll()
        if code is not None:
            raise GuestFailed(
                f"QEMU exited with code {code} while the VM was starting",
                hint=f"see {self.vm.runner_log} and {self.vm.serial_log}",
                detail=tail(self.vm.runner_log, 15) or tail(self.vm.serial_log, 15),
            )
        if self.console_deadline is not None and time.monotonic() >= self.console_deadline:
            if _console_silent(self.vm):
                raise KvmSilent(
                    f"VM {self.vm.name} printed nothing on its console for "
                    f"{KVM_SILENCE_SECONDS:g}s under KVM: Linux does not run under KVM here",
                    hint="unset AGENT_VM_ACCEL (agent-vm then falls back to TCG by itself) "
                    "or set AGENT_VM_ACCEL=tcg; 'agent-vm doctor' shows the KVM check",
                )
            self.console_deadline = None

    def timed_out(self, stage: str) -> StartTimeout:
        cause = LIKELY_CAUSE[stage].format(
            runner_log=self.vm.runner_log,
            serial_log=self.vm.serial_log,
            agent_port=self.agent_port,
            booting=_BOOTING.get(self.accel, _BOOTING["tcg"]),
        )
        return StartTimeout(
            f"VM {self.vm.name} was not ready after {self.timeout:g}s: stage '{stage}' timed out",
            hint=f"likely cause: {cause}",
            detail=tail(self.vm.serial_log, 20),
        )


def _poll(probe: Probe, stage: str, attempt: Callable[[], bool]) -> StageTiming:
    t0 = time.monotonic()
    delay = BACKOFF_START
    while True:
        probe.check_alive()
        if attempt():
            seconds = time.monotonic() - t0
            REPORTER.clear_status()
            return StageTiming(stage=stage, seconds=round(seconds, 3), ok=True)
        now = time.monotonic()
        if now >= probe.deadline:
            REPORTER.clear_status()
            raise probe.timed_out(stage)
        REPORTER.status_line(f"{probe.vm.name}: {STAGE_LABELS[stage]} … {now - t0:.0f}s")
        time.sleep(min(delay, max(0.0, probe.deadline - now)))
        delay = min(delay * 1.5, BACKOFF_MAX)


def _ssh_attempt(probe: Probe) -> Callable[[], bool]:
    host = probe.cfg.host_address
    seen_banner = False

    def attempt() -> bool:
        nonlocal seen_banner
        if not ssh.banner(host, probe.ssh_port):
            return False
        if not seen_banner:
            seen_banner = True
            emit(
                EventKind.SSH_BANNER,
                "sshd answers; logging in",
                severity=Severity.DEBUG,
                vm=probe.vm.name,
            )
        ok, err = ssh.login_works(probe.vm, probe.cfg, probe.ssh_port)
        if not ok and "Host key verification failed" in err:
            raise GuestFailed(
                f"VM {probe.vm.name} answered with a host key that is not its own",
                hint="something else is answering on the VM's SSH port; refusing to connect",
            )
        if not ok:
            emit(
                EventKind.SSH_FAILED,
                f"SSH login not ready yet: {err or 'no answer'}",
                severity=Severity.DEBUG,
                vm=probe.vm.name,
            )
        return ok

    return attempt


def _console_silent(vm: VmPaths) -> bool:
    try:
        return vm.serial_log.stat().st_size == 0
    except FileNotFoundError:
        return True


def wait_ready(probe: Probe) -> list[StageTiming]:
    return [wait_qemu(probe), *wait_guest(probe)]


def wait_qemu(probe: Probe) -> StageTiming:
    """QEMU is up: its pidfile is written and QMP answers."""
    emit(EventKind.STAGE, "waiting for QEMU", vm=probe.vm.name, stage="qemu")
    timing = _poll(
        probe, "qemu", lambda: probe.vm.pidfile.exists() and qmp.answers(probe.vm.qmp_socket)
    )
    if probe.accel == "kvm":
        probe.console_deadline = time.monotonic() + KVM_SILENCE_SECONDS
    return timing


def wait_guest(probe: Probe) -> list[StageTiming]:
    """The guest is ready: an SSH login with the pinned key works, then the
    agent answers."""
    name = probe.vm.name
    stages = []
    emit(
        EventKind.SSH_CONNECTING,
        f"waiting for SSH on {probe.cfg.host_address}:{probe.ssh_port}",
        vm=name,
        stage="ssh",
    )
    stages.append(_poll(probe, "ssh", _ssh_attempt(probe)))
    emit(EventKind.SSH_CONNECTED, f"SSH answered after {stages[-1].seconds:.1f}s", vm=name)
    emit(
        EventKind.AGENT_STARTING,
        f"waiting for the agent on port {probe.agent_port}",
        vm=name,
        stage="agent",
    )
    token = agent_secrets.read_token(probe.vm)
    stages.append(
        _poll(
            probe,
            "agent",
            lambda: health.agent_healthy(probe.cfg.host_address, probe.agent_port, token),
        )
    )
    emit(EventKind.AGENT_HEALTHY, f"agent healthy after {stages[-1].seconds:.1f}s", vm=name)
    return stages


def qemu_pid(vm: VmPaths) -> int | None:
    try:
        return int(vm.pidfile.read_text().strip())
    except (OSError, ValueError):
        return None


def adopt_qemu_pid(vm: VmPaths, rt: Runtime) -> Runtime:
    """With virtiofs the runner stays QEMU's parent; once the VM is ready
    the pid to supervise is QEMU's own (from its pidfile)."""
    qpid = qemu_pid(vm)
    if qpid is not None and qpid != rt.pid and procs.is_alive(qpid):
        return rt.model_copy(update={"pid": qpid, "pid_start_time": procs.start_time(qpid)})
    return rt


def report_ready(vm: VmPaths, rt: Runtime, what: str) -> None:
    total = sum(s.seconds for s in rt.stages)
    emit(
        EventKind.VM_STARTED,
        f"VM {vm.name} {what} ({total:.1f}s)",
        severity=Severity.NOTICE,
        vm=vm.name,
        stages=[s.model_dump() for s in rt.stages],
    )
