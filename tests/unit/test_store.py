"""store: JSON files in and out through their models; a corrupt file is a
CorruptState (exit 11) that names the file and how to recover."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest
from agent_vm import store
from agent_vm.errors import CorruptState, NotFound
from agent_vm.models import Runtime, VmConfig, VmState
from agent_vm.paths import StateLayout, VmPaths
from unit_fakes import vm_config, write_vm


@pytest.fixture
def layout(tmp_path: Path) -> StateLayout:
    return StateLayout(tmp_path / "state")


@pytest.fixture
def vm(layout: StateLayout) -> VmPaths:
    return write_vm(layout, vm_config())


def test_save_and_load(vm: VmPaths) -> None:
    assert store.load_config(vm) == vm_config()
    assert stat.S_IMODE(vm.config.stat().st_mode) == 0o600
    rt = Runtime(state=VmState.RUNNING, pid=1, pid_start_time=2)
    store.save(vm.runtime, rt)
    assert store.load_runtime(vm) == rt
    assert vm.config.read_text().endswith("}\n")


def test_missing_runtime_is_a_stopped_vm(vm: VmPaths) -> None:
    assert store.load_runtime(vm) == Runtime()


def test_missing_config_is_not_found(layout: StateLayout) -> None:
    with pytest.raises(NotFound) as exc:
        store.load_config(layout.vm("nope-01234567"))
    assert exc.value.message == "no VM named 'nope-01234567'" and exc.value.exit_code == 3
    with pytest.raises(NotFound, match="does not exist"):
        store.load(layout.root / "x.json", Runtime)


@pytest.mark.parametrize(
    ("content", "where"),
    [
        ('{"name": "main-01', "file"),
        ("", "file"),
        ("null", "file"),
        ("[]", "file"),
        ('{"name": "x"}', "branch"),
        ("\x00\xff garbage", "file"),
    ],
)
def test_corrupt_config_names_the_file_and_the_fix(vm: VmPaths, content: str, where: str) -> None:
    vm.config.write_text(content, errors="surrogateescape")
    with pytest.raises(CorruptState) as exc:
        store.load_config(vm)
    assert exc.value.exit_code == 11
    assert exc.value.message.startswith(f"{vm.config} is corrupt (")
    assert "\n" not in exc.value.message
    assert (
        exc.value.hint
        == "restore it, or remove the VM with 'agent-vm destroy --force main-0123abcd'"
    )
    if where != "file":
        assert f"({where}:" in exc.value.message


def test_out_of_range_value_is_corrupt(vm: VmPaths) -> None:
    data = vm.config.read_text().replace('"ssh_port": 2222', '"ssh_port": 70000')
    vm.config.write_text(data)
    with pytest.raises(CorruptState, match=r"vm\.json is corrupt \(ssh_port: "):
        store.load_config(vm)


def test_corrupt_runtime_names_the_file(vm: VmPaths) -> None:
    vm.runtime.write_text('{"state": "dancing"}')
    with pytest.raises(CorruptState) as exc:
        store.load_runtime(vm)
    assert exc.value.message.startswith(f"{vm.runtime} is corrupt (state: ")


def test_load_with_a_custom_recovery_hint(tmp_path: Path) -> None:
    f = tmp_path / "kvm-probe.json"
    f.write_text("{")
    with pytest.raises(CorruptState) as exc:
        store.load(f, VmConfig, recover="delete it")
    assert exc.value.hint == "delete it"


def test_vm_names_lists_only_complete_vms(layout: StateLayout) -> None:
    assert store.vm_names(layout) == []  # no state dir yet
    write_vm(layout, vm_config("b-00000000"))
    write_vm(layout, vm_config("a-00000000"))
    (layout.vms / ".c-00000000.creating-123").mkdir()  # a create in progress
    (layout.vms / "d-00000000").mkdir()  # no vm.json
    (layout.vms / "stray-file").write_text("")
    assert store.vm_names(layout) == ["a-00000000", "b-00000000"]


def test_save_replaces_atomically(vm: VmPaths) -> None:
    store.save(vm.config, vm_config(cores=4))
    assert store.load_config(vm).cores == 4
    assert sorted(p.name for p in vm.dir.iterdir()) == ["vm.json"]  # no temp files left


def test_an_unreadable_state_file_is_corrupt_not_a_crash(vm: VmPaths) -> None:
    vm.config.unlink()
    vm.config.mkdir()  # a directory where vm.json should be
    with pytest.raises(CorruptState) as exc:
        store.load_config(vm)
    assert exc.value.message == f"{vm.config} cannot be read (Is a directory)"
    assert exc.value.hint and f"destroy --force {vm.name}" in exc.value.hint
    vm.runtime.mkdir()
    with pytest.raises(CorruptState, match=r"runtime.json cannot be read \(Is a directory\)"):
        store.load_runtime(vm)
    assert store.vm_names(StateLayout(vm.dir.parent.parent)) == [vm.name]


def test_a_permission_error_is_corrupt_state(vm: VmPaths, monkeypatch: pytest.MonkeyPatch) -> None:
    # Root reads mode-000 files, so the error is made here; the real mode-000
    # case runs as an ordinary user in tests/e2e/test_faults.py.
    def denied(self: Path) -> bytes:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", denied)
    with pytest.raises(CorruptState, match=r"vm.json cannot be read \(Permission denied\)"):
        store.load_config(vm)


def test_a_vm_dir_we_cannot_look_into_is_still_listed(
    layout: StateLayout, vm: VmPaths, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As for a VM directory of mode 000 seen by its (unprivileged) owner.
    for method in ("stat", "lstat"):
        real = getattr(Path, method)

        def denied(self: Path, *args: Any, real: Any = real, **kw: Any) -> os.stat_result:
            if self == vm.config:
                raise PermissionError(13, "Permission denied", str(self))
            return real(self, *args, **kw)  # type: ignore[no-any-return]

        monkeypatch.setattr(Path, method, denied)
    assert store.vm_names(layout) == [vm.name]
