"""End-to-end harness: the real `agent-vm` CLI against a real QEMU (TCG).

Only the NixOS closure is replaced: the runner is built by `nix build` from
tests/e2e/flake (the project's own lib/ + a Debian guest from
tests/e2e/guest/build-guest.sh, cached). QEMU, SSH, git and the filesystem
are all real. Nothing here skips: a missing tool fails the run.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import Cli, Unprivileged, base_env, kill_processes_under, make_repo

ROOT = Path(__file__).resolve().parents[2]
GUEST_BUILDER = ROOT / "tests" / "e2e" / "guest" / "build-guest.sh"
UNPRIV_USER = os.environ.get("AGENT_VM_E2E_USER", "agentvm-e2e")


def _require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"end-to-end tests need {tool!r} on PATH (run ./run-tests, it installs it)")
    return path


@pytest.fixture(scope="session")
def agent_vm_bin() -> str:
    for tool in ("qemu-system-x86_64", "qemu-img", "nix", "ssh", "ssh-keygen", "git"):
        _require(tool)
    return _require("agent-vm")


@pytest.fixture(scope="session")
def guest_dir() -> Path:
    res = subprocess.run(
        ["bash", str(GUEST_BUILDER)],
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
    )
    if res.returncode != 0:
        pytest.fail(f"building the test guest failed:\n{res.stderr[-3000:]}")
    out = Path(res.stdout.strip().splitlines()[-1])
    assert (out / "ready").exists(), out
    return out


@pytest.fixture(scope="session")
def e2e_flake() -> Iterator[Path]:
    """The test flake with a copy of lib/, world-readable for the unprivileged user."""
    d = Path(tempfile.mkdtemp(prefix="agent-vm-flake-"))
    shutil.copy(ROOT / "tests" / "e2e" / "flake" / "flake.nix", d / "flake.nix")
    shutil.copytree(ROOT / "lib", d / "lib")
    subprocess.run(["chmod", "-R", "a+rX", str(d)], check=True)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def cli(agent_vm_bin: str, e2e_flake: Path, guest_dir: Path, tmp_path: Path) -> Iterator[Cli]:
    state = tmp_path / "state"
    c = Cli(agent_vm_bin, state, base_env(e2e_flake, guest_dir))
    yield c
    leftovers = kill_processes_under(state)
    assert not leftovers, f"stray processes were left running: {leftovers}"


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "repo")


@pytest.fixture(scope="session")
def unprivileged() -> Iterator[Unprivileged]:
    """An ordinary user with a nix daemon to build through.

    Run as root (as CI does), this creates the user and starts nix-daemon
    for the session; run as an ordinary user, that user is the one and a
    multi-user Nix (daemon) must already be installed.
    """
    if os.getuid() != 0:
        pw = pwd.getpwuid(os.getuid())
        yield Unprivileged(pw.pw_name, pw.pw_uid, pw.pw_gid, Path(pw.pw_dir))
        return
    try:
        pw = pwd.getpwnam(UNPRIV_USER)
    except KeyError:
        subprocess.run(["useradd", "-m", "-s", "/bin/sh", UNPRIV_USER], check=True)
        pw = pwd.getpwnam(UNPRIV_USER)
    subprocess.run(["usermod", "-aG", "nix-users", UNPRIV_USER], check=True)
    daemon = None
    socket = Path("/nix/var/nix/daemon-socket/socket")
    if not _daemon_answers():
        daemon = subprocess.Popen(
            ["nix-daemon", "--option", "substituters", ""],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        for _ in range(100):
            if socket.exists() and _daemon_answers():
                break
            time.sleep(0.05)
    try:
        yield Unprivileged(pw.pw_name, pw.pw_uid, pw.pw_gid, Path(pw.pw_dir))
    finally:
        if daemon is not None:
            os.killpg(daemon.pid, signal.SIGTERM)
            daemon.wait(timeout=10)


def _daemon_answers() -> bool:
    res = subprocess.run(
        [
            "nix",
            "--extra-experimental-features",
            "nix-command",
            "store",
            "ping",
            "--store",
            "daemon",
        ],
        capture_output=True,
        check=False,
    )
    return res.returncode == 0


@pytest.fixture
def user_tmp(unprivileged: Unprivileged) -> Iterator[Path]:
    """A temp dir the unprivileged user owns (pytest's tmp_path is root's 0700)."""
    d = Path(tempfile.mkdtemp(prefix="agent-vm-e2e-"))
    os.chmod(d, 0o755)  # noqa: S103 - the unprivileged user must reach its files
    if os.getuid() == 0:
        shutil.chown(d, unprivileged.name, unprivileged.name)
    yield d
    kill_processes_under(d)
    shutil.rmtree(d, ignore_errors=True)
