"""Choosing the accelerator: KVM where it really works, TCG otherwise.

On some hosts /dev/kvm exists and opens, yet QEMU fails once a guest runs
(nested virtualisation on this project's own CI machines aborts QEMU on the
first MSR write). The runner's `-accel kvm -accel tcg` only falls back when
KVM fails to *initialise*, so before a start we run a one-second probe and
hand the runner AGENT_VM_ACCEL=tcg when KVM is unusable. The answer is
cached per boot of the host.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from pydantic import BaseModel

from . import qmp, store, tools
from .errors import AgentVmError
from .fsutil import ensure_private_dir
from .paths import StateLayout

QEMU = "qemu-system-x86_64"
KVM_PROBE_SECONDS = 1.0
ENV = "AGENT_VM_ACCEL"


class KvmProbe(BaseModel):
    """`<state-dir>/kvm-probe.json`: the last probe's answer for this boot."""

    boot_id: str
    usable: bool
    detail: str


# A 64 KiB firmware whose reset vector (offset 0xFFF0) loads 0x31 into AL,
# writes it to the isa-debug-exit port and halts; QEMU then exits with
# (0x31 << 1) | 1 = 99. If the accelerator cannot run even this, QEMU hangs
# or stops in "internal-error".
_PROBE_CODE = bytes([0xB0, 0x31, 0xE6, 0xF4, 0xF4])
_PROBE_EXIT = 99


def _probe_firmware(path: Path) -> None:
    img = bytearray(b"\xf4" * 65536)
    img[0xFFF0 : 0xFFF0 + len(_PROBE_CODE)] = _PROBE_CODE
    path.write_bytes(bytes(img))


def kvm_probe(timeout: float = KVM_PROBE_SECONDS) -> tuple[bool, str]:
    """Run a tiny guest under KVM for at most `timeout` seconds."""
    if not tools.have(QEMU):
        return False, f"{QEMU} not found"
    with tempfile.TemporaryDirectory(prefix="agent-vm-kvm-probe-") as d:
        fw, sock = Path(d) / "probe.bin", Path(d) / "qmp.sock"
        _probe_firmware(fw)
        argv = [
            QEMU,
            "-accel",
            "kvm",
            "-machine",
            "pc",
            "-cpu",
            "max",
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-bios",
            str(fw),
            "-device",
            "isa-debug-exit,iobase=0xf4,iosize=0x04",
            "-qmp",
            f"unix:{sock},server=on,wait=off",
        ]
        with open(Path(d) / "log", "wb") as log:
            proc = tools.spawn(argv, log=log)
        deadline = time.monotonic() + timeout
        status = "no answer"
        while time.monotonic() < deadline:
            code = proc.poll()
            if code is not None:
                err = (Path(d) / "log").read_text(errors="replace").strip().splitlines()
                if code == _PROBE_EXIT:
                    return True, "a test guest ran under KVM"
                return False, f"QEMU exited {code}: {err[-1] if err else 'no message'}"
            if sock.exists():
                try:
                    with qmp.Qmp(sock, timeout=0.5) as q:
                        status = q.execute("query-status").get("status", "?")
                except (qmp.QmpError, OSError):
                    pass
                if status == "internal-error":
                    break
            time.sleep(0.05)
        proc.kill()
        proc.wait()
        return False, f"the test guest did not finish within {timeout:g}s (status: {status})"


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


def choose(layout: StateLayout) -> tuple[str, str]:
    """(accelerator, why): the user's AGENT_VM_ACCEL wins; else probe."""
    forced = os.environ.get(ENV)
    if forced in ("kvm", "tcg"):
        return forced, f"{ENV}={forced}"
    dev = Path("/dev/kvm")
    if not dev.exists() or not os.access(dev, os.R_OK | os.W_OK):
        return "tcg", "/dev/kvm is missing or not accessible"
    cache = layout.root / "kvm-probe.json"
    boot = _boot_id()
    try:
        cached = store.load(cache, KvmProbe)
        if cached.boot_id == boot:
            return ("kvm" if cached.usable else "tcg"), cached.detail + " (cached)"
    except AgentVmError:
        pass
    usable, detail = kvm_probe()
    ensure_private_dir(layout.root)
    store.save(cache, KvmProbe(boot_id=boot, usable=usable, detail=detail))
    return ("kvm" if usable else "tcg"), detail
