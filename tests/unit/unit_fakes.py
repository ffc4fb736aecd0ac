"""Unit-test fakes and helpers.

plumbum imports Popen into its own module and runs the resolved program
path (/usr/bin/git), so pytest-subprocess's `fp` would never see it. The
shim below hands every plumbum launch to `subprocess.Popen` (which `fp`
replaces while it is active) with argv[0] reduced to the program name, so
fakes are registered as ["git", …] on any host. Without `fp` the launch is
real (the name is found on the PATH plumbum passes in its environment).
"""

from __future__ import annotations

import importlib
import io
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

# `plumbum.machines.local` the attribute is the LocalMachine object; we need
# the module of that name.
plumbum_local = importlib.import_module("plumbum.machines.local")

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "python"
DATA = Path(__file__).parent / "data"

# The environment of each launch, for tests of what a command is given.
LAUNCH_ENVS: list[dict[str, str]] = []


@dataclass(frozen=True)
class Launch:
    argv: list[str]
    cwd: str
    env: dict[str, str]


# Every program launched through tools (argv as run, working directory, the
# environment plumbum passed), for tests of where and how git runs.
LAUNCHES: list[Launch] = []


def _popen_by_name(argv: list[str], *args: Any, **kwargs: Any) -> Any:
    argv = [os.path.basename(str(argv[0])), *map(str, argv[1:])]
    env = dict(kwargs.get("env") or {})
    LAUNCH_ENVS.append(env)
    LAUNCHES.append(Launch(argv, str(kwargs.get("cwd") or os.getcwd()), env))
    return subprocess.Popen(argv, *args, **kwargs)


@pytest.fixture
def ctx(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A Context on a new source repository and state dir; no KVM probe, 9p."""
    from agent_vm.context import Context
    from agent_vm.paths import StateLayout

    repo = make_repo(tmp_path / "repo")
    monkeypatch.setenv("AGENT_VM_ACCEL", "tcg")
    monkeypatch.setenv("AGENT_VM_SHARE", "9p")
    return Context(layout=StateLayout(tmp_path / "state"), timeout=1.0, cwd=repo)


@pytest.fixture(autouse=True)
def plumbum_through_subprocess(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(plumbum_local, "Popen", _popen_by_name)
    LAUNCH_ENVS.clear()
    LAUNCHES.clear()
    yield


@pytest.fixture(autouse=True)
def reset_reporter() -> Iterator[None]:
    """The event reporter is a module global: give every test a fresh one."""
    from agent_vm.events import REPORTER

    yield
    REPORTER.__init__()  # type: ignore[misc]


@pytest.fixture(autouse=True)
def restore_signals() -> Iterator[None]:
    """cli.main installs SIGTERM/SIGHUP/SIGINT handlers; undo them."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)}
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)


# --- git -------------------------------------------------------------------------

GIT_ENV = {
    "GIT_AUTHOR_NAME": "Test",
    "GIT_AUTHOR_EMAIL": "test@example.invalid",
    "GIT_COMMITTER_NAME": "Test",
    "GIT_COMMITTER_EMAIL": "test@example.invalid",
    "GIT_CONFIG_NOSYSTEM": "1",
}


def git(repo: Path, *args: str) -> str:
    """Run git in `repo` for the test's own setup; return stdout stripped."""
    res = subprocess.run(
        ["git", "-C", str(repo), *args],
        env={**os.environ, **GIT_ENV},
        capture_output=True,
        text=True,
        check=False,
    )
    if res.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed: {res.stderr}")
    return res.stdout.strip()


def make_repo(path: Path, branch: str = "main") -> Path:
    """A repository with one commit on `branch`."""
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q", "-b", branch)
    (path / "README").write_text("hello\n")
    git(path, "add", "README")
    git(path, "commit", "-q", "-m", "first")
    return path


def commit(repo: Path, name: str, text: str = "x\n") -> str:
    (repo / name).write_text(text)
    git(repo, "add", name)
    git(repo, "commit", "-q", "-m", f"add {name}")
    return git(repo, "rev-parse", "HEAD")


# --- models and state ------------------------------------------------------------


def vm_config(name: str = "main-0123abcd", **over: Any) -> Any:
    from agent_vm.models import VmConfig

    data: dict[str, Any] = {
        "name": name,
        "branch": "main",
        "repo": "/src/repo",
        "commit": "a" * 40,
        "workspace": f"/state/vms/{name}/workspace",
        "workspace_owned": True,
        "host_address": "127.0.0.1",
        "ssh_port": 2222,
        "agent_port": 8000,
        "created_at": datetime(2026, 11, 25, tzinfo=UTC),
    }
    return VmConfig.model_validate(data | over)


def write_vm(layout: Any, cfg: Any, runtime: Any = None) -> Any:
    """A VM directory with vm.json (and runtime.json) as create would leave it."""
    from agent_vm import store
    from agent_vm.fsutil import ensure_private_dir

    vm = layout.vm(cfg.name)
    ensure_private_dir(vm.dir)
    store.save(vm.config, cfg)
    if runtime is not None:
        store.save(vm.runtime, runtime)
    return vm


# --- running the CLI -------------------------------------------------------------


@dataclass
class CliResult:
    code: int
    out: str
    err: str


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> CliResult:
    """`agent-vm ARGV` in this process; argparse's SystemExit is a result too."""
    from agent_vm import cli

    capsys.readouterr()
    try:
        code = cli.main(list(argv))
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return CliResult(code, out, err)


def run_module(
    *argv: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 60
) -> CliResult:
    """`python -m agent_vm ARGV` as a separate process (this checkout's code)."""
    full_env = {**os.environ, **GIT_ENV, "PYTHONPATH": str(SRC)}
    full_env.update(env or {})
    res = subprocess.run(
        [sys.executable, "-m", "agent_vm", *argv],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return CliResult(res.returncode, res.stdout, res.stderr)


def spawn_exec(argv: list[str]) -> subprocess.Popen[bytes]:
    """Popen, then wait until the new program's command line is visible.

    With vfork, Popen returns as soon as the child's execve has released
    the old memory, a moment before the kernel has set up the new argument
    area: /proc/PID/cmdline can still read as empty.
    """
    proc = subprocess.Popen(argv)
    want = os.fsencode(argv[-1])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if want in Path(f"/proc/{proc.pid}/cmdline").read_bytes().split(b"\0"):
                return proc
        except OSError:
            pass
        time.sleep(0.001)
    proc.kill()
    raise AssertionError(f"{argv} did not start")


class TtyStringIO(io.StringIO):
    """A text stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def write_fake_tool(directory: Path, name: str, body: str) -> Path:
    """An executable shell script `directory/name`."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


# --- a VM with a real workspace (for the quarantine, diff, pull, destroy) ----------


@dataclass
class Box:
    layout: Any
    vm: Any
    cfg: Any
    repo: Path

    @property
    def ws(self) -> Path:
        return Path(self.cfg.workspace)


def workspace_vm(tmp_path: Path, name: str = "main-0123abcd") -> Box:
    """A source repository and a VM whose workspace create made from it (no QEMU)."""
    from agent_vm import gitops
    from agent_vm.paths import StateLayout

    repo = make_repo(tmp_path / "repo")
    layout = StateLayout(tmp_path / "state")
    cfg = vm_config(
        name,
        repo=str(repo),
        commit=git(repo, "rev-parse", "HEAD"),
        workspace=str(layout.vm(name).workspace),
    )
    vm = write_vm(layout, cfg)
    gitops.make_workspace(gitops.resolve(repo, "main"), vm.workspace)
    return Box(layout, vm, cfg, repo)


def tree_state(root: Path) -> dict[str, tuple[int, bytes | str]]:
    """Every path below `root`: (mode, content or link target), for
    before/after comparisons."""
    out: dict[str, tuple[int, bytes | str]] = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        if p.is_symlink():
            out[str(p.relative_to(root))] = (st.st_mode, os.readlink(p))
        elif p.is_file():
            out[str(p.relative_to(root))] = (st.st_mode, p.read_bytes())
        else:
            out[str(p.relative_to(root))] = (st.st_mode, b"")
    return out
