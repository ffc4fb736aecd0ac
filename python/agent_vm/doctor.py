"""agent-vm doctor: is this host ready for `agent-vm up`, and if not, why.

Each check says pass/fail, what it saw and how to fix it. A check is
blocking when `up` cannot work without it; the rest are advice.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel

from . import accel, flakelock, fsutil, nixbuild, nixhost, ports, procs, store, tools
from .context import Context
from .errors import AgentVmError, FlakeNotFound
from .models import AGENT_PORT_START, SSH_PORT_START, VmState
from .paths import StateLayout

DOCTOR_SCHEMA_VERSION = 1
QEMU = accel.QEMU


class Check(BaseModel):
    name: str
    ok: bool
    blocking: bool
    detail: str
    fix: str | None = None


class DoctorReport(BaseModel):
    """`agent-vm doctor --json`."""

    schema_version: int = DOCTOR_SCHEMA_VERSION
    ok: bool
    accelerator: str
    checks: list[Check]


def _version(argv: list[str], pattern: str) -> str | None:
    try:
        res = tools.run(argv, check=False, timeout=10)
    except AgentVmError:
        return None
    m = re.search(pattern, res.stdout + res.stderr)
    return m.group(1) if m else None


def check_tool(name: str, argv: list[str], pattern: str, blocking: bool = True) -> Check:
    if not tools.have(argv[0]):
        return Check(
            name=name,
            ok=False,
            blocking=blocking,
            detail=f"{argv[0]} not found on PATH",
            fix=f"install {tools.PACKAGES.get(argv[0], argv[0])}",
        )
    version = _version(argv, pattern)
    return Check(
        name=name,
        ok=version is not None,
        blocking=blocking,
        detail=f"{argv[0]} {version}" if version else f"{argv[0]} did not report a version",
        fix=None if version else f"check that {argv[0]} runs",
    )


def check_nix() -> tuple[Check, nixhost.NixVersion | None]:
    need = ".".join(map(str, nixhost.NIXPKGS_MIN_NIX))
    if not tools.have("nix"):
        return Check(
            name="nix",
            ok=False,
            blocking=True,
            detail="nix not found on PATH",
            fix=f"install Nix {need} or newer (https://nixos.org/download)",
        ), None
    v = nixhost.version()
    if v is None:
        return Check(
            name="nix",
            ok=False,
            blocking=True,
            detail="nix did not report a version",
            fix="check that 'nix --version' runs",
        ), None
    if not v.new_enough:
        return Check(
            name="nix",
            ok=False,
            blocking=True,
            detail=f"nix {v.number}: the pinned nixpkgs (nixos-25.11) needs Nix {need} "
            "or newer (its lib/minfeatures.nix)",
            fix=f"upgrade Nix to {need} or newer (https://nixos.org/download)",
        ), v
    return Check(name="nix", ok=True, blocking=True, detail=f"nix {v.number}"), v


def check_nix_features(v: nixhost.NixVersion | None) -> Check:
    """Not blocking: agent-vm passes --extra-experimental-features itself."""
    name = "nix-features"
    if v is None:
        return Check(name=name, ok=False, blocking=False, detail="not checked: no working nix")
    off = nixhost.disabled_features(v)
    if off is None:
        return Check(
            name=name,
            ok=False,
            blocking=False,
            detail="not checked: 'nix show-config' did not answer",
            fix="run 'nix show-config' to see why",
        )
    if not off:
        return Check(name=name, ok=True, blocking=False, detail="nix-command and flakes are on")
    return Check(
        name=name,
        ok=False,
        blocking=False,
        detail=f"{' and '.join(off)} {'is' if len(off) == 1 else 'are'} off in your Nix "
        "configuration: agent-vm turns them on for its own calls, but "
        "'nix run .#agent-vm' and 'nix flake check' need them",
        fix="add 'experimental-features = nix-command flakes' to ~/.config/nix/nix.conf "
        "(NixOS: nix.settings.experimental-features), or pass "
        "--extra-experimental-features 'nix-command flakes' to those commands",
    )


def check_flake() -> tuple[Check, str | None]:
    try:
        flake = nixbuild.default_flake()
    except FlakeNotFound as exc:
        return Check(name="flake", ok=False, blocking=True, detail=exc.message, fix=exc.hint), None
    env = os.environ.get(nixbuild.FLAKE_ENV)
    source = nixbuild.FLAKE_ENV if env else "the checkout agent-vm runs from"
    return Check(name="flake", ok=True, blocking=True, detail=f"{flake} (from {source})"), flake


def check_flake_inputs(flake: str | None, v: nixhost.NixVersion | None) -> Check:
    """Fetches what the first `up` would (nixpkgs: ~50 MB the first time)."""
    name = "flake-inputs"
    if flake is None or v is None or not v.new_enough:
        return Check(
            name=name,
            ok=False,
            blocking=False,
            detail="not checked: needs the flake and a new enough Nix (above)",
        )
    got = nixhost.fetch_inputs(flake)
    if got.ok:
        inputs = ", ".join(got.inputs) or "none"
        return Check(
            name=name, ok=True, blocking=True, detail=f"fetched, narHash as locked: {inputs}"
        )
    if got.refused is not None:
        return Check(
            name=name,
            ok=False,
            blocking=True,
            detail=flakelock.mismatch_message(got.refused),
            fix=flakelock.relock_hint(flake),
        )
    return Check(
        name=name,
        ok=False,
        blocking=True,
        detail=f"nix flake archive failed: {got.error}",
        fix=f"run 'nix flake archive {flake}' to see why (network? a private flake?)",
    )


def check_kvm(layout: StateLayout, timeout: float = accel.PROBE_SECONDS) -> tuple[list[Check], str]:
    """Whether Linux runs under KVM here: /dev/kvm opening is not enough
    (on some hosts firmware runs under it and a kernel hangs), so a VM's own
    kernel is booted under KVM (accel.kvm_probe)."""
    dev = Path("/dev/kvm")
    if not dev.exists():
        return [
            Check(
                name="kvm",
                ok=False,
                blocking=False,
                detail="/dev/kvm does not exist; VMs run under TCG emulation (slow)",
                fix="enable virtualisation in the firmware / load kvm_intel or kvm_amd",
            )
        ], "tcg"
    if not os.access(dev, os.R_OK | os.W_OK):
        return [
            Check(
                name="kvm",
                ok=False,
                blocking=False,
                detail="/dev/kvm exists but is not accessible to you; using TCG",
                fix="add yourself to the 'kvm' group (sudo usermod -aG kvm $USER) and log in again",
            )
        ], "tcg"
    found = _probe_runner(layout)
    if found is None:
        return [
            Check(
                name="kvm",
                ok=False,
                blocking=False,
                detail="/dev/kvm opens, but whether Linux runs under it is not known yet: "
                "no VM has been built to test it with",
                fix="'agent-vm up' tests it with the VM's own kernel (and falls back to TCG "
                "if it hangs); run doctor again after that",
            )
        ], "auto"
    name, runner = found
    usable, why = accel.kvm_probe(runner, timeout)
    if usable:
        return [
            Check(name="kvm", ok=True, blocking=False, detail=f"KVM usable: {why} (VM {name})")
        ], "kvm"
    return [
        Check(
            name="kvm",
            ok=False,
            blocking=False,
            detail=f"KVM unusable, using TCG: /dev/kvm opens but {why} (VM {name})",
            fix="nothing needed: VMs start under TCG emulation (slower); to use KVM, fix "
            "nested virtualisation on the outer hypervisor",
        )
    ], "tcg"


def _probe_runner(layout: StateLayout) -> tuple[str, Path] | None:
    """The most recently built VM runner that can probe KVM, with its VM."""
    found = []
    for name in store.vm_names(layout):
        runner = layout.vm(name).runner
        if accel.supports_probe(runner):
            # Store paths all have mtime 1; the link says when it was built.
            found.append((layout.vm(name).runner_link.lstat().st_mtime, name, runner))
    if not found:
        return None
    _, name, runner = max(found)
    return name, runner


def check_nested() -> Check:
    for mod in ("kvm_intel", "kvm_amd"):
        p = Path(f"/sys/module/{mod}/parameters/nested")
        if p.exists():
            value = p.read_text().strip()
            on = value in ("Y", "1")
            return Check(
                name="nested-virtualisation",
                ok=on,
                blocking=False,
                detail=f"{mod} nested={value}",
                fix=None
                if on
                else f"modprobe {mod} nested=1 (only needed for VMs "
                "inside agent-vm VMs, e.g. nix flake check in a guest)",
            )
    in_vm = "hypervisor" in Path("/proc/cpuinfo").read_text()
    return Check(
        name="nested-virtualisation",
        ok=False,
        blocking=False,
        detail="no kvm_intel/kvm_amd module" + (" (this host is itself a VM)" if in_vm else ""),
        fix="only needed to run VMs inside agent-vm VMs",
    )


def check_virtiofsd() -> Check:
    found = tools.have("virtiofsd")
    return Check(
        name="virtiofsd",
        ok=found,
        blocking=False,
        detail="virtiofsd on PATH: the workspace is shared with virtiofs"
        if found
        else "virtiofsd not found: the workspace is shared over 9p (slower)",
        fix=None if found else "install virtiofsd (the Nix package brings its own)",
    )


def check_ports() -> list[Check]:
    out = []
    for what, start in (("ssh-ports", SSH_PORT_START), ("agent-ports", AGENT_PORT_START)):
        try:
            first = ports.allocate("127.0.0.1", start, ())
            out.append(
                Check(
                    name=what,
                    ok=True,
                    blocking=True,
                    detail=f"first free port from {start}: {first}",
                )
            )
        except AgentVmError as exc:
            out.append(
                Check(name=what, ok=False, blocking=True, detail=exc.message, fix="free some ports")
            )
    return out


def check_state_dir(layout: StateLayout) -> list[Check]:
    root = layout.root
    probe = root if root.exists() else next((p for p in root.parents if p.exists()), Path("/"))
    writable = os.access(probe, os.W_OK | os.X_OK)
    checks = [
        Check(
            name="state-dir",
            ok=writable,
            blocking=True,
            detail=f"{root} {'is' if root.exists() else 'will be'} "
            f"{'writable' if writable else 'NOT writable'}",
            fix=None if writable else f"fix permissions of {probe} or use --state-dir",
        )
    ]
    if root.exists():
        checks.append(_state_dir_permissions(root))
    return checks


def _state_dir_permissions(root: Path) -> Check:
    """What `start` refuses (others can write it, another user owns it)
    blocks; readable by others only warns. Never advise a chmod of a
    directory agent-vm did not make (`--state-dir /tmp`)."""
    name = "state-dir-permissions"
    try:
        fsutil.check_private_dir(root)
    except AgentVmError as exc:
        return Check(name=name, ok=False, blocking=True, detail=exc.message, fix=exc.hint)
    mode = stat.S_IMODE(root.stat().st_mode)
    private = mode & 0o077 == 0
    return Check(
        name=name,
        ok=private,
        blocking=False,
        detail=f"{root} mode {mode:04o}" + ("" if private else ": other users can list it"),
        fix=None if private else f"chmod go-rx {root} if it is agent-vm's alone",
    )


def check_stale(layout: StateLayout) -> Check:
    stale = []
    for name in store.vm_names(layout):
        vm = layout.vm(name)
        try:
            rt = store.load_runtime(vm)
        except AgentVmError as exc:
            stale.append(f"{name} ({exc.message})")
            continue
        live = procs.is_ours(rt.pid, rt.pid_start_time, vm.dir)
        if rt.state != VmState.STOPPED and not live:
            stale.append(f"{name} (recorded {rt.state.value}, QEMU gone)")
        elif rt.state == VmState.STOPPED and any(p.exists() for p in vm.sockets):
            stale.append(f"{name} (stopped, sockets left)")
    return Check(
        name="stale-vms",
        ok=not stale,
        blocking=False,
        detail="none" if not stale else "; ".join(stale),
        fix=None
        if not stale
        else "'agent-vm start NAME' recovers, 'agent-vm stop NAME' "
        "cleans up, 'agent-vm destroy NAME' removes",
    )


def run(ctx: Context) -> DoctorReport:
    nix, version = check_nix()
    flake, flake_ref = check_flake()
    checks: list[Check] = [
        nix,
        check_nix_features(version),
        flake,
        check_flake_inputs(flake_ref, version),
    ]
    steps: list[Callable[[], Check]] = [
        lambda: check_tool("qemu", [QEMU, "--version"], r"version (\d+\.\d+\.\d+)"),
        lambda: check_tool("qemu-img", ["qemu-img", "--version"], r"version (\d+\.\d+\.\d+)"),
        lambda: check_tool("ssh", ["ssh", "-V"], r"OpenSSH_([\w.]+)"),
        _ssh_keygen,
        lambda: check_tool("git", ["git", "--version"], r"version (\d+\.\d+\.\d+)"),
    ]
    checks += [s() for s in steps]
    kvm_checks, accel = check_kvm(ctx.layout)
    checks += kvm_checks
    checks += [
        check_nested(),
        check_virtiofsd(),
        *check_ports(),
        *check_state_dir(ctx.layout),
        check_stale(ctx.layout),
    ]
    ok = all(c.ok for c in checks if c.blocking)
    return DoctorReport(ok=ok, accelerator=accel, checks=checks)


def _ssh_keygen() -> Check:
    found = tools.have("ssh-keygen")
    return Check(
        name="ssh-keygen",
        ok=found,
        blocking=True,
        detail="ssh-keygen found" if found else "ssh-keygen not found on PATH",
        fix=None if found else "install openssh-client",
    )


def render(report: DoctorReport) -> str:
    lines = []
    for c in report.checks:
        mark = "ok  " if c.ok else ("FAIL" if c.blocking else "warn")
        lines.append(f"[{mark}] {c.name}: {c.detail}")
        if not c.ok and c.fix:
            lines.append(f"       fix: {c.fix}")
    lines.append(f"accelerator: {report.accelerator}")
    lines.append("ready for 'agent-vm up'" if report.ok else "NOT ready: fix the FAIL lines above")
    return "\n".join(lines)
