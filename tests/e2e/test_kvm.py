"""KVM on this host, judged by booting the real guest: doctor's verdict,
a forced-KVM start, and the automatic fall back to TCG.

This project's machines have a /dev/kvm that opens and runs firmware, while
a Linux kernel hangs under it printing nothing (DESIGN.md). The test boots
the guest's kernel under KVM through the real CLI and asserts what that
shows here: KVM unusable, said within seconds. The start that falls back to
TCG by itself is test_lifecycle.py::test_foreground_start_supervises_the_vm;
the other tests force AGENT_VM_ACCEL=tcg.
"""

from __future__ import annotations

import time
from pathlib import Path

from harness import Cli


def test_kvm_hang_is_seen_by_doctor_and_a_forced_kvm_start(cli: Cli, repo: Path) -> None:
    assert Path("/dev/kvm").exists(), "this test is about a host whose /dev/kvm opens"
    name = cli("create", "--json", cwd=repo).json()["name"]

    # The guest under KVM, forced: its console stays silent, and the start
    # says so within seconds instead of blaming slow TCG at the timeout.
    cli.env["AGENT_VM_ACCEL"] = "kvm"
    t0 = time.monotonic()
    r = cli("start", cwd=repo, check=False)
    elapsed = time.monotonic() - t0
    assert r.returncode == 15, r.stderr
    assert (
        f"VM {name} printed nothing on its console for 10s under KVM: "
        "Linux does not run under KVM here" in r.stderr
    )
    assert "TCG emulation" not in r.stderr
    assert elapsed < 120, elapsed  # the build, QEMU up, 10 s of silence; not the 300 s timeout
    assert cli("status", "--json", cwd=repo).json()["state"] == "failed"

    # doctor boots the same kernel (the VM's runner, --kvm-probe) under KVM.
    cli.env["AGENT_VM_ACCEL"] = "auto"
    report = cli("doctor", "--json", cwd=repo, check=False).json()
    kvm = next(c for c in report["checks"] if c["name"] == "kvm")
    assert kvm["detail"] == (
        "KVM unusable, using TCG: /dev/kvm opens but a Linux kernel printed nothing within "
        f"10s under KVM: it hangs (KVM runs firmware here, not Linux) (VM {name})"
    ), kvm
    assert report["accelerator"] == "tcg" and not kvm["ok"] and not kvm["blocking"]

    # The automatic fall back to TCG (a start sent to KVM by a cached probe
    # answer) is shown on test_lifecycle.py's supervised start: no boot of
    # its own.
    cli("destroy", "--force", cwd=repo)
