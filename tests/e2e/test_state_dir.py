"""The state directory under adverse conditions, from the real CLI: a shared
directory given as --state-dir, state files nobody can read, and a file
system that is full. None of these boots a VM."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import Cli, Unprivileged, base_env, git, make_repo


def test_a_shared_state_dir_is_refused_and_left_as_it_was(
    cli: Cli, repo: Path, tmp_path: Path
) -> None:
    shared = tmp_path / "shared-tmp"
    shared.mkdir()
    shared.chmod(0o1777)  # like /tmp
    other = Cli(cli.binary, shared, cli.env)
    for verb in (("create",), ("list",)):
        r = other(*verb, cwd=repo, check=False)
        assert r.returncode == 2, r.stderr
        assert f"{shared} can be written by other users (mode 1777)" in r.stderr
        assert "hint:" in r.stderr
    assert shared.stat().st_mode & 0o7777 == 0o1777
    assert list(shared.iterdir()) == []


def test_unreadable_state_files_as_an_ordinary_user(
    agent_vm_bin: str,
    e2e_flake: Path,
    guest_dir: Path,
    unprivileged: Unprivileged,
    user_tmp: Path,
) -> None:
    """Root reads mode-000 files; the owner of the state dir does not."""
    env = base_env(e2e_flake, guest_dir) | {
        "HOME": str(unprivileged.home),
        "PATH": os.environ["PATH"],
    }
    user = unprivileged.name if os.getuid() == 0 else None
    cli = Cli(agent_vm_bin, user_tmp / "state", env, user=user)
    repo = make_repo(user_tmp / "repo", user=user)
    for b in ("other", "third", "fourth"):
        git(repo, "branch", b, user=user)
    bad = cli("create", "--json", cwd=repo).json()["name"]
    dirvm = cli("create", "--branch", "other", "--json", cwd=repo).json()["name"]
    vms = user_tmp / "state" / "vms"
    cfg = vms / dirvm / "vm.json"
    # vm.json of mode 000, and a directory where vm.json should be that its
    # owner cannot read either.
    script = (
        f"chmod 0 '{vms / bad / 'vm.json'}' && rm '{cfg}' && mkdir '{cfg}' "
        f"&& touch '{cfg}/x' && chmod 0 '{cfg}'"
    )
    subprocess.run(
        [*(["runuser", "-u", user, "--"] if user else []), "sh", "-c", script], check=True
    )

    r = cli("list", "--json", cwd=repo)
    rows = {v["name"]: v for v in r.json()["vms"]}
    assert rows[bad]["state"] == "broken"
    assert rows[bad]["error"] == f"{vms / bad / 'vm.json'} cannot be read (Permission denied)"
    assert rows[dirvm]["state"] == "broken" and "cannot be read" in rows[dirvm]["error"]
    r = cli("status", bad, cwd=repo, check=False)
    assert r.returncode == 11, r.stderr
    assert "internal error" not in r.stderr and f"destroy --force {bad}" in r.stderr
    # Other VMs are unaffected: a new one gets ports, the list shows it.
    third = cli("create", "--branch", "third", "--json", cwd=repo).json()
    assert third["ssh_port"] > 0
    assert cli("status", "third", cwd=repo).returncode == 0
    r = cli("destroy", bad, cwd=repo, check=False)
    assert r.returncode == 11
    cli("destroy", "--force", bad, cwd=repo)
    cli("destroy", "--force", dirvm, cwd=repo)
    assert sorted(p.name for p in vms.iterdir()) == [third["name"]]


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs: a file system that fills up."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", str(mnt)], check=True
    )
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=True)


def fill(fs: Path, leave: int = 0) -> None:
    """Take `fs`'s free space but about `leave` bytes (all of it for 0)."""
    fd = os.open(fs / f"filler-{len(list(fs.glob('filler-*')))}", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            st = os.statvfs(fs)
            free = st.f_bavail * st.f_frsize - leave
            if free <= 0 and leave:
                break
            os.write(fd, b"\0" * max(4096, min(free, 1 << 20)))
    except OSError:
        pass
    finally:
        os.close(fd)


def test_a_full_file_system_is_named_and_nothing_is_half_made(
    cli: Cli, repo: Path, small_fs: Path
) -> None:
    state = small_fs / "state"
    c = Cli(cli.binary, state, cli.env)
    # --network open: the egress proxy's files (egress.setup) are not what
    # this is about, and its directory is made before the first write fails.
    name = c("create", "--network", "open", "--json", cwd=repo).json()["name"]
    vm = state / "vms" / name
    # A VM recorded as running whose QEMU is gone (as after a crash): stop
    # cleans up, which writes runtime.json.
    dead = subprocess.Popen(["true"])
    dead.wait()
    runtime = {
        "state": "running",
        "pid": dead.pid,
        "pid_start_time": 1,
        "ssh_port": 2222,
        "agent_port": 8000,
    }
    (vm / "runtime.json").write_text(json.dumps(runtime))
    before = sorted(p.name for p in vm.iterdir())
    fill(small_fs)
    for verb in ("stop", "start"):
        r = c(verb, name, cwd=repo, check=False)
        assert r.returncode == 22, (verb, r.stderr)
        assert f"no space left on {small_fs} (the file system of {state})" in r.stderr, r.stderr
        assert "internal error" not in r.stderr and "Errno" not in r.stderr
        assert sorted(p.name for p in vm.iterdir()) == before, verb  # no temp files
        assert json.loads((vm / "runtime.json").read_text()) == runtime

    # A clone that does not fit: git says only "unpack-objects failed".
    for f in small_fs.glob("filler-*"):
        f.unlink()
    git(repo, "checkout", "-q", "-b", "big")
    (repo / "big.bin").write_bytes(os.urandom(3 << 20))
    git(repo, "add", "big.bin")
    git(repo, "commit", "-q", "-m", "big")
    fill(small_fs, leave=512 << 10)
    r = c("create", "--json", cwd=repo, check=False)
    assert r.returncode == 22, r.stderr
    assert f"no space left on {small_fs}" in r.stderr and "internal error" not in r.stderr
    assert sorted(p.name for p in (state / "vms").iterdir()) == [name]  # no half-made VM
    shutil.rmtree(vm)
