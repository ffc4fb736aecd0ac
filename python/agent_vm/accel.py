"""Choosing the accelerator: KVM where Linux really runs under it, TCG otherwise.

On some hosts /dev/kvm exists and opens, and a few instructions of
firmware run under it, yet a Linux kernel hangs right after it is
decompressed, printing nothing (this project's own machines). So the probe
boots what a guest needs, the VM's own kernel, under KVM: the runner's
`--kvm-probe` mode (lib/qemu-args.nix, kvmProbeArgs) starts it with no
initrd or disk, so it panics looking for its root and `-no-reboot` ends
QEMU. Reaching that panic in time is "usable". The answer is cached per
boot of the host; a start that still shows no console output under KVM
records the host as unusable and falls back to TCG (lifecycle).
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel

from . import store, tools
from .errors import AgentVmError
from .fsutil import ensure_private_dir
from .paths import StateLayout

QEMU = "qemu-system-x86_64"
ENV = "AGENT_VM_ACCEL"
# A kernel boots to its root-mount panic in about a second under KVM; one
# that KVM cannot run prints nothing at all.
PROBE_SECONDS = 10.0
PROBE_FLAG = "--kvm-probe"
_PANIC = b"Kernel panic"
_KERNEL_STARTED = b"Linux version"


class KvmProbe(BaseModel):
    """`<state-dir>/kvm-probe.json`: the last probe's answer for this boot."""

    boot_id: str
    usable: bool
    detail: str


@dataclass(frozen=True)
class Choice:
    accel: str  # "kvm" or "tcg"
    why: str
    forced: bool  # the user's AGENT_VM_ACCEL: no fallback


def supports_probe(runner: Path) -> bool:
    """Whether a built runner has the --kvm-probe mode (older ones would
    start the VM instead). The runner is ours, in the Nix store."""
    try:
        return PROBE_FLAG.encode() in runner.read_bytes()
    except OSError:
        return False


def kvm_probe(runner: Path, timeout: float = PROBE_SECONDS) -> tuple[bool, str]:
    """Boot the runner's kernel under KVM to its deliberate panic."""
    with tempfile.TemporaryDirectory(prefix="agent-vm-kvm-probe-") as d:
        out = Path(d) / "console"
        with open(out, "wb") as log:
            proc = tools.spawn([str(runner), PROBE_FLAG], log=log)
        t0 = time.monotonic()
        code = None
        try:
            while code is None and time.monotonic() - t0 < timeout:
                time.sleep(0.05)
                code = proc.poll()
        finally:
            # Also on Ctrl-C: a hung probe burns a CPU until killed.
            if code is None:
                proc.kill()
                proc.wait()
        seconds = time.monotonic() - t0
        console = out.read_bytes()
    if code is not None and _PANIC in console:
        return True, f"the VM's kernel booted under KVM (to a deliberate panic) in {seconds:.1f}s"
    if code is not None:
        lines = console.decode(errors="replace").strip().splitlines()
        return False, f"QEMU exited {code} under KVM: {lines[-1] if lines else 'no message'}"
    if _KERNEL_STARTED in console:
        return False, f"the VM's kernel started under KVM but did not boot within {timeout:g}s"
    return False, (
        f"a Linux kernel printed nothing within {timeout:g}s under KVM: "
        "it hangs (KVM runs firmware here, not Linux)"
    )


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


def kvm_accessible() -> bool:
    dev = Path("/dev/kvm")
    return dev.exists() and os.access(dev, os.R_OK | os.W_OK)


def _cache(layout: StateLayout) -> Path:
    return layout.root / "kvm-probe.json"


def choose(layout: StateLayout, runner: Path) -> Choice:
    """The user's AGENT_VM_ACCEL wins; else this boot's probe answer."""
    forced = os.environ.get(ENV)
    if forced in ("kvm", "tcg"):
        return Choice(forced, f"{ENV}={forced}", forced=True)
    if not kvm_accessible():
        return Choice("tcg", "/dev/kvm is missing or not accessible", forced=False)
    boot = _boot_id()
    try:
        cached = store.load(_cache(layout), KvmProbe)
        if cached.boot_id == boot:
            accel = "kvm" if cached.usable else "tcg"
            return Choice(accel, cached.detail + " (cached)", forced=False)
    except AgentVmError:
        pass
    if not supports_probe(runner):
        # A runner from an older lib: try KVM, the start falls back if it hangs.
        return Choice("kvm", "not probed (the runner has no --kvm-probe)", forced=False)
    usable, detail = kvm_probe(runner)
    _record(layout, usable, detail)
    return Choice("kvm" if usable else "tcg", detail, forced=False)


def record_unusable(layout: StateLayout, detail: str) -> None:
    """A start saw KVM hang after all: later starts this boot use TCG."""
    _record(layout, False, detail)


def _record(layout: StateLayout, usable: bool, detail: str) -> None:
    ensure_private_dir(layout.root)
    store.save(_cache(layout), KvmProbe(boot_id=_boot_id(), usable=usable, detail=detail))
