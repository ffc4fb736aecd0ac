"""accel: AGENT_VM_ACCEL wins; no usable /dev/kvm means TCG; otherwise the
VM's own kernel is booted under KVM (the runner's --kvm-probe, faked here:
the real kernel on real QEMU is tests/e2e/test_kvm.py), and the answer is
cached per boot."""

from __future__ import annotations

from pathlib import Path

import pytest
from agent_vm import accel, store
from agent_vm.paths import StateLayout

PANIC = (
    "[    0.000000] Linux version 6.1.0\\n"
    "[    0.9] Kernel panic - not syncing: VFS: Unable to mount root fs\\n"
)


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


def fake_runner(tmp_path: Path, probe: str) -> Path:
    """A runner whose --kvm-probe mode runs `probe` (sh) with its argv recorded."""
    runner = tmp_path / "run-agent-vm"
    runner.write_text(
        "#!/bin/sh\n"
        f'printf "%s\\n" "$@" > "{tmp_path}/argv"\n'
        'if [ "${1:-}" = --kvm-probe ]; then\n'
        f"{probe}\n"
        "fi\n"
        "echo started the VM instead; exit 3\n"
    )
    runner.chmod(0o755)
    return runner


@pytest.mark.parametrize("forced", ["kvm", "tcg"])
def test_environment_wins(
    layout: StateLayout, monkeypatch: pytest.MonkeyPatch, forced: str, tmp_path: Path
) -> None:
    monkeypatch.setenv("AGENT_VM_ACCEL", forced)
    monkeypatch.setattr(accel, "kvm_probe", no_probe)
    assert accel.choose(layout, tmp_path) == accel.Choice(
        forced, f"AGENT_VM_ACCEL={forced}", forced=True
    )


def test_missing_dev_kvm_is_tcg(
    layout: StateLayout, kvm_node: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    kvm_node.unlink()
    monkeypatch.setattr(accel, "kvm_probe", no_probe)
    choice = accel.choose(layout, tmp_path)
    assert (choice.accel, choice.why) == ("tcg", "/dev/kvm is missing or not accessible")
    assert not choice.forced


def test_a_kernel_that_boots_to_its_panic_means_kvm(tmp_path: Path) -> None:
    runner = fake_runner(tmp_path, f"printf '{PANIC}'; exit 0")
    usable, why = accel.kvm_probe(runner, timeout=5)
    assert usable, why
    assert why.startswith("the VM's kernel booted under KVM (to a deliberate panic) in ")
    assert (tmp_path / "argv").read_text() == "--kvm-probe\n"


def test_a_silent_kernel_is_unusable_and_killed(tmp_path: Path) -> None:
    # What this project's machines do: no output at all, QEMU spinning.
    runner = fake_runner(tmp_path, f"echo $$ > '{tmp_path}/pid'; exec sleep 30")
    usable, why = accel.kvm_probe(runner, timeout=0.5)
    assert not usable
    assert why == (
        "a Linux kernel printed nothing within 0.5s under KVM: "
        "it hangs (KVM runs firmware here, not Linux)"
    )
    pid = int((tmp_path / "pid").read_text())
    assert not Path(f"/proc/{pid}").exists()


def test_a_kernel_that_stalls_part_way_is_unusable(tmp_path: Path) -> None:
    runner = fake_runner(tmp_path, "echo '[ 0.0] Linux version 6.1.0'; exec sleep 30")
    usable, why = accel.kvm_probe(runner, timeout=0.5)
    assert not usable
    assert why == "the VM's kernel started under KVM but did not boot within 0.5s"


def test_qemu_failing_under_kvm_is_unusable(tmp_path: Path) -> None:
    runner = fake_runner(
        tmp_path, "echo 'qemu-system-x86_64: error: failed to set MSR 0x48f to 0x0' >&2; exit 1"
    )
    assert accel.kvm_probe(runner, timeout=5) == (
        False,
        "QEMU exited 1 under KVM: qemu-system-x86_64: error: failed to set MSR 0x48f to 0x0",
    )


def test_probe_result_is_cached_per_boot(
    layout: StateLayout, kvm_node: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    runner = fake_runner(tmp_path, "exit 1")
    calls: list[Path] = []

    def probe(r: Path) -> tuple[bool, str]:
        calls.append(r)
        return False, "QEMU exited 1 under KVM: MSR"

    monkeypatch.setattr(accel, "kvm_probe", probe)
    assert accel.choose(layout, runner) == accel.Choice(
        "tcg", "QEMU exited 1 under KVM: MSR", forced=False
    )
    assert accel.choose(layout, runner).why == "QEMU exited 1 under KVM: MSR (cached)"
    assert calls == [runner]
    cache = store.load(layout.root / "kvm-probe.json", accel.KvmProbe)
    assert cache.boot_id == accel._boot_id() and not cache.usable
    # Another boot: probe again.
    store.save(layout.root / "kvm-probe.json", cache.model_copy(update={"boot_id": "old"}))
    accel.choose(layout, runner)
    assert len(calls) == 2


def test_a_hang_seen_at_start_is_remembered(
    layout: StateLayout, kvm_node: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    runner = fake_runner(tmp_path, "exit 0")
    monkeypatch.setattr(accel, "kvm_probe", lambda r: (True, "booted"))
    assert accel.choose(layout, runner).accel == "kvm"
    accel.record_unusable(layout, "printed nothing for 10s under KVM")
    monkeypatch.setattr(accel, "kvm_probe", no_probe)
    assert accel.choose(layout, runner) == accel.Choice(
        "tcg", "printed nothing for 10s under KVM (cached)", forced=False
    )


def test_corrupt_cache_is_probed_again(
    layout: StateLayout, kvm_node: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    layout.root.mkdir(parents=True)
    (layout.root / "kvm-probe.json").write_text("{garbage")
    runner = fake_runner(tmp_path, "exit 0")
    monkeypatch.setattr(accel, "kvm_probe", lambda r: (True, "booted"))
    assert accel.choose(layout, runner).accel == "kvm"


def test_a_runner_without_the_probe_is_never_run(
    layout: StateLayout, kvm_node: Path, tmp_path: Path
) -> None:
    """An older runner would start the whole VM: KVM is tried, and the start
    falls back to TCG if the guest stays silent."""
    old = tmp_path / "old-runner"
    old.write_text(f"#!/bin/sh\ntouch '{tmp_path}/ran'\n")
    old.chmod(0o755)
    assert not accel.supports_probe(old)
    assert accel.choose(layout, old) == accel.Choice(
        "kvm", "not probed (the runner has no --kvm-probe)", forced=False
    )
    assert not (tmp_path / "ran").exists()
