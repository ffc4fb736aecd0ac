"""accel: AGENT_VM_ACCEL wins; no usable /dev/kvm means TCG; the probe's
answer is cached per boot. (The probe itself: tests/unit/test_doctor.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest
from agent_vm import accel, store
from agent_vm.paths import StateLayout


def no_probe(*args: object) -> tuple[bool, str]:
    raise AssertionError("the KVM probe must not run")


@pytest.fixture
def layout(tmp_path: Path) -> StateLayout:
    return StateLayout(tmp_path / "state")


@pytest.fixture
def kvm_node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    node = tmp_path / "kvm"
    node.write_text("")
    real = Path
    monkeypatch.setattr(accel, "Path", lambda *a: node if str(real(*a)) == "/dev/kvm" else real(*a))
    monkeypatch.delenv("AGENT_VM_ACCEL", raising=False)
    return node


@pytest.mark.parametrize("forced", ["kvm", "tcg"])
def test_environment_wins(
    layout: StateLayout, monkeypatch: pytest.MonkeyPatch, forced: str
) -> None:
    monkeypatch.setenv("AGENT_VM_ACCEL", forced)
    monkeypatch.setattr(accel, "kvm_probe", no_probe)
    assert accel.choose(layout) == (forced, f"AGENT_VM_ACCEL={forced}")


def test_missing_dev_kvm_is_tcg(
    layout: StateLayout, kvm_node: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kvm_node.unlink()
    monkeypatch.setattr(accel, "kvm_probe", no_probe)
    assert accel.choose(layout) == ("tcg", "/dev/kvm is missing or not accessible")


def test_probe_result_is_cached_per_boot(
    layout: StateLayout, kvm_node: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []

    def probe(*args: object) -> tuple[bool, str]:
        calls.append(1)
        return False, "QEMU exited 1: MSR"

    monkeypatch.setattr(accel, "kvm_probe", probe)
    assert accel.choose(layout) == ("tcg", "QEMU exited 1: MSR")
    assert accel.choose(layout) == ("tcg", "QEMU exited 1: MSR (cached)")
    assert len(calls) == 1
    cache = store.load(layout.root / "kvm-probe.json", accel.KvmProbe)
    assert cache.boot_id == accel._boot_id() and not cache.usable
    # Another boot: probe again.
    store.save(layout.root / "kvm-probe.json", cache.model_copy(update={"boot_id": "old"}))
    accel.choose(layout)
    assert len(calls) == 2


def test_corrupt_cache_is_probed_again(
    layout: StateLayout, kvm_node: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    layout.root.mkdir(parents=True)
    (layout.root / "kvm-probe.json").write_text("{garbage")
    monkeypatch.setattr(accel, "kvm_probe", lambda *a: (True, "a test guest ran under KVM"))
    assert accel.choose(layout) == ("kvm", "a test guest ran under KVM")


def test_probe_firmware_layout(tmp_path: Path) -> None:
    fw = tmp_path / "fw.bin"
    accel._probe_firmware(fw)
    data = fw.read_bytes()
    assert len(data) == 65536
    # Reset vector: mov al, 0x31; out 0xf4, al; hlt.
    assert data[0xFFF0 : 0xFFF0 + 5] == bytes([0xB0, 0x31, 0xE6, 0xF4, 0xF4])
