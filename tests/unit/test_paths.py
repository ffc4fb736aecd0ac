"""paths: the state layout of docs/architecture.md, the default state dir,
and state dirs ssh cannot be given."""

from __future__ import annotations

from pathlib import Path

import pytest
from agent_vm.errors import InvalidInput
from agent_vm.paths import StateLayout, check_state_dir, default_state_dir


def test_layout_matches_the_architecture_doc(tmp_path: Path) -> None:
    layout = StateLayout(tmp_path)
    assert layout.ports_lock == tmp_path / "locks" / "ports.lock"
    assert layout.vm_lock("x") == tmp_path / "locks" / "x.lock"
    vm = layout.vm("main-0123abcd")
    d = tmp_path / "vms" / "main-0123abcd"
    assert vm.dir == d and vm.name == "main-0123abcd"
    expected = {
        "config": "vm.json",
        "runtime": "runtime.json",
        "params": "params.json",
        "client_key": "ssh/id_ed25519",
        "client_pubkey": "ssh/id_ed25519.pub",
        "host_key": "ssh/ssh_host_ed25519_key",
        "host_pubkey": "ssh/ssh_host_ed25519_key.pub",
        "known_hosts": "ssh/known_hosts",
        "qmp_socket": "qmp.sock",
        "console_socket": "console.sock",
        "serial_log": "serial.log",
        "pidfile": "qemu.pid",
        "runner_log": "runner.log",
        "build_log": "build.log",
        "events_log": "events.log",
        "disk": "disk.qcow2",
        "runner_link": "runner",
        "runner": "runner/bin/run-agent-vm",
        "workspace": "workspace",
        "workspace_disk": "workspace.qcow2",
        "memory_file": "memory.ram",
        "snapshot_state": "snapshot.vmstate",
        "snapshot_meta": "snapshot.json",
        "guest_agent_socket": "qga.sock",
    }
    for attr, rel in expected.items():
        assert getattr(vm, attr) == d / rel, attr
    # The runtime files the lib's statePaths also names (tests/nix/test_lib_eval.py).
    assert vm.sockets == (d / "qmp.sock", d / "console.sock", d / "qga.sock")
    d.mkdir(parents=True)
    for tag in ("workspace", "nix-store"):
        (d / f"virtiofs-{tag}.sock").touch()
    assert vm.sockets == (
        d / "qmp.sock",
        d / "console.sock",
        d / "qga.sock",
        d / "virtiofs-nix-store.sock",
        d / "virtiofs-workspace.sock",
    )
    arch = (Path(__file__).resolve().parents[2] / "docs" / "architecture.md").read_text()
    for rel in (
        "vm.json",
        "runtime.json",
        "params.json",
        "known_hosts",
        "disk.qcow2",
        "events.log",
        "workspace.qcow2",
        "memory.ram",
        "snapshot.vmstate",
        "snapshot.json",
        "qga.sock",
    ):
        assert rel in arch
    # The VM's disks a snapshot belongs to: those that exist.
    assert vm.disks == ()
    vm.disk.touch()
    vm.workspace_disk.touch()
    assert vm.disks == (d / "disk.qcow2", d / "workspace.qcow2")


def test_default_state_dir_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert default_state_dir() == tmp_path / "xdg" / "agent-vm"


@pytest.mark.parametrize("bad", ["a${HOME}", 'say "hi"', "new\nline"])
def test_state_dir_ssh_cannot_take_is_refused(tmp_path: Path, bad: str) -> None:
    with pytest.raises(InvalidInput) as exc:
        check_state_dir(tmp_path / bad)
    assert exc.value.exit_code == 2 and exc.value.hint == "choose another --state-dir"


@pytest.mark.parametrize("fine", ["a b", "a,b", "a%h", "a$b", "a'b", "é"])
def test_odd_but_usable_state_dirs_are_accepted(tmp_path: Path, fine: str) -> None:
    assert check_state_dir(tmp_path / fine) == tmp_path / fine


def test_relative_state_dir_becomes_absolute(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    assert check_state_dir(Path("rel")) == tmp_path / "rel"


def test_an_existing_state_dir_others_can_write_is_refused(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    with pytest.raises(InvalidInput, match="can be written by other users"):
        check_state_dir(shared)
    assert shared.stat().st_mode & 0o7777 == 0o1777
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    assert check_state_dir(private) == private
    assert check_state_dir(tmp_path / "not-yet") == tmp_path / "not-yet"
