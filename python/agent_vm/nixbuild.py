"""Building a VM's runner with Nix (docs/contract.md).

`build_argv` is pure so the exact command line is pinned by a unit test;
`build` runs it with AGENT_VM_PARAMS pointing at the VM's params.json.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

from . import flakelock, tools
from .errors import BuildFailed, FlakeNotFound
from .events import REPORTER, EventKind, Severity, emit
from .fsutil import atomic_write
from .nixprogress import BuildProgress
from .paths import VmPaths

RUNNER_ATTR = "agent-vm-runner"
FLAKE_ENV = "AGENT_VM_FLAKE"
NIX_FEATURES = "nix-command flakes"

_SYSTEMS = {
    "x86_64": "x86_64-linux",
    "amd64": "x86_64-linux",
    "aarch64": "aarch64-linux",
    "arm64": "aarch64-linux",
}


def host_system() -> str:
    return _SYSTEMS.get(platform.machine().lower(), f"{platform.machine()}-linux")


def default_flake() -> str:
    """$AGENT_VM_FLAKE, else the checkout this package was installed from."""
    env = os.environ.get(FLAKE_ENV)
    if env:
        checkout = flakelock.local_checkout(env)
        if checkout is not None and not (Path(checkout) / "flake.nix").is_file():
            raise FlakeNotFound(
                f"{FLAKE_ENV}={env}: there is no flake.nix in {checkout}",
                hint=f"point {FLAKE_ENV} at a checkout of agent-vm (path:/src/agent-vm) "
                "or at github:<owner>/agent-vm",
            )
        return env
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "flake.nix").is_file() and (parent / "lib" / "default.nix").is_file():
            return f"path:{parent}"
    raise FlakeNotFound(
        "no agent-vm flake to build VMs from: this agent-vm was installed without one",
        hint=f"run it as 'nix run github:<owner>/agent-vm -- up', or set {FLAKE_ENV} "
        "to the flake (github:<owner>/agent-vm, or path:/src/agent-vm for a checkout)",
    )


def installable(flake: str, system: str) -> str:
    return f"{flake}#legacyPackages.{system}.{RUNNER_ATTR}"


def build_argv(flake: str, system: str, out_link: Path) -> list[str]:
    return [
        "nix",
        "--extra-experimental-features",
        NIX_FEATURES,
        "build",
        "--impure",
        "--log-format",
        "internal-json",
        "--print-build-logs",
        "--out-link",
        str(out_link),
        installable(flake, system),
    ]


def build(vm: VmPaths, flake: str | None = None) -> Path:
    """Build the runner; return its path. The out-link is the GC root."""
    flake = flake or default_flake()
    argv = build_argv(flake, host_system(), vm.runner_link)
    progress = BuildProgress()

    def on_line(line: str) -> None:
        if progress.feed(line):
            REPORTER.status_line(progress.line())
            emit(
                EventKind.BUILD_PROGRESS,
                progress.line(),
                severity=Severity.DEBUG,
                vm=vm.name,
                done=progress.done,
                expected=progress.expected,
                current=progress.current,
            )

    try:
        res = tools.stream(argv, on_line, env={"AGENT_VM_PARAMS": str(vm.params)})
    finally:
        REPORTER.clear_status()
    atomic_write(vm.build_log, res.stderr)
    if not res.ok:
        refused = flakelock.refused_input("\n".join(progress.messages))
        if refused is not None:
            raise BuildFailed(
                f"{flakelock.mismatch_message(refused)}; full log: {vm.build_log}",
                hint=flakelock.relock_hint(flake),
                detail=progress.failure_tail(),
            )
        raise BuildFailed(
            f"nix build failed (exit {res.returncode}); full log: {vm.build_log}",
            detail=progress.failure_tail(),
        )
    if not vm.runner.exists():
        raise BuildFailed(f"nix build produced no {vm.runner}")
    return vm.runner
