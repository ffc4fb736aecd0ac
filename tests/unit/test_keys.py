"""keys: ssh-keygen's command line, and the keys it leaves (ed25519, no
passphrase, 0600 in a 0700 directory, the host key pinned in known_hosts)."""

from __future__ import annotations

import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from agent_vm import keys
from agent_vm.errors import CommandFailed, InvalidInput, MissingTool
from agent_vm.paths import StateLayout, VmPaths
from plumbum import local
from pytest_subprocess import FakeProcess


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def vm(tmp_path: Path) -> VmPaths:
    vm = StateLayout(tmp_path / "state").vm("main-0123abcd")
    vm.dir.mkdir(parents=True)
    return vm


@pytest.fixture
def open_umask() -> Iterator[None]:
    """Modes must not depend on the user's umask."""
    old = os.umask(0)
    yield
    os.umask(old)


def test_keygen_command_lines(fp: FakeProcess, vm: VmPaths) -> None:
    def write_key(process: object, path: Path) -> None:
        path.write_text("PRIVATE\n")
        path.chmod(0o644)  # whatever ssh-keygen does, we fix the mode
        Path(f"{path}.pub").write_text(f"ssh-ed25519 AAAAkey{path.name} comment\n")

    expected = [
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", c, "-f", str(k)]
        for k, c in ((vm.client_key, "agent-vm@main"), (vm.host_key, "host@main"))
    ]
    for argv, key in zip(expected, (vm.client_key, vm.host_key), strict=True):
        fp.register(argv, callback=write_key, callback_kwargs={"path": key})
    keys.generate(vm, "main")
    assert [list(c) for c in fp.calls] == expected
    assert mode(vm.ssh_dir) == 0o700
    assert mode(vm.client_key) == mode(vm.host_key) == 0o600
    assert vm.known_hosts.read_text() == "agent-vm-main ssh-ed25519 AAAAkeyssh_host_ed25519_key\n"


def test_keygen_failure_is_a_command_failure(fp: FakeProcess, vm: VmPaths) -> None:
    fp.register(["ssh-keygen", fp.any()], returncode=1, stderr="Saving key failed: denied\n")
    with pytest.raises(CommandFailed, match="Saving key failed: denied"):
        keys.generate(vm, "main")


def test_missing_ssh_keygen(vm: VmPaths, tmp_path: Path) -> None:
    with local.env(PATH=str(tmp_path)), pytest.raises(MissingTool) as exc:
        keys.generate(vm, "main")
    assert exc.value.message == "'ssh-keygen' was not found on PATH"
    assert exc.value.hint == "install openssh-client"


def test_real_keys(vm: VmPaths, open_umask: None) -> None:
    keys.generate(vm, "main-0123abcd")
    assert mode(vm.ssh_dir) == 0o700
    for key in (vm.client_key, vm.host_key):
        assert mode(key) == 0o600
        # ed25519, and no passphrase: -P '' can read it.
        pub = subprocess.run(
            ["ssh-keygen", "-y", "-P", "", "-f", str(key)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        assert pub[0] == "ssh-ed25519"
        assert Path(f"{key}.pub").read_text().split()[:2] == pub[:2]
    assert mode(vm.known_hosts) == 0o600
    host_pub = vm.host_pubkey.read_text().split()
    assert vm.known_hosts.read_text() == (f"agent-vm-main-0123abcd {host_pub[0]} {host_pub[1]}\n")
    assert vm.client_pubkey.read_text().split()[2] == "agent-vm@main-0123abcd"
    # The two keys differ.
    assert vm.client_pubkey.read_text().split()[1] != host_pub[1]


def test_known_hosts_is_what_ssh_accepts(vm: VmPaths) -> None:
    """ssh-keygen -F finds the host key under the alias ssh will look up."""
    keys.generate(vm, "main-0123abcd")
    res = subprocess.run(
        ["ssh-keygen", "-F", keys.host_alias("main-0123abcd"), "-f", str(vm.known_hosts)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert res.returncode == 0 and vm.host_pubkey.read_text().split()[1] in res.stdout


def test_an_ssh_dir_others_can_write_is_refused(vm: VmPaths) -> None:
    # create makes the keys in a fresh directory of its own; one that
    # already exists is never chmod-ed, and refused when others can write it.
    vm.ssh_dir.mkdir()
    vm.ssh_dir.chmod(0o777)
    with pytest.raises(InvalidInput, match="can be written by other users"):
        keys.generate(vm, "x")
    assert not vm.client_key.exists()
