"""doctor: each check's verdict, the KVM classification when the probe
fails (a fake QEMU), and `doctor --json` against its own schema."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import pytest
from agent_vm import accel, doctor
from agent_vm.doctor import DoctorReport
from agent_vm.paths import StateLayout
from plumbum import local
from unit_fakes import run_cli, write_fake_tool

QEMU_VERSION = 'if [ "$1" = --version ]; then echo "QEMU emulator version 7.2.9"; exit 0; fi\n'


def fake_dev_kvm(monkeypatch: pytest.MonkeyPatch, target: Path) -> None:
    """Make the module's Path("/dev/kvm") be `target` (a file we control)."""
    real = Path

    def path(*args: str) -> Path:
        p = real(*args)
        return target if str(p) == "/dev/kvm" else p

    monkeypatch.setattr(doctor, "Path", path)
    monkeypatch.setattr(accel, "Path", path)


@pytest.fixture
def kvm_node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    node = tmp_path / "dev-kvm"
    node.write_text("")
    node.chmod(0o666)
    fake_dev_kvm(monkeypatch, node)
    return node


@pytest.fixture
def fake_qemu_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory put first on plumbum's PATH for a fake qemu-system-x86_64."""
    bindir = tmp_path / "fakebin"
    bindir.mkdir()
    with local.env(PATH=f"{bindir}:{os.environ['PATH']}"):
        yield bindir


def test_kvm_probe_failing_qemu_means_tcg(kvm_node: Path, fake_qemu_dir: Path) -> None:
    write_fake_tool(
        fake_qemu_dir,
        accel.QEMU,
        QEMU_VERSION + 'echo "qemu-system-x86_64: error: failed to set MSR 0x48f to 0x0" >&2\n'
        "exit 1\n",
    )
    checks, chosen = doctor.check_kvm()
    assert chosen == "tcg"
    (check,) = checks
    assert not check.ok and not check.blocking
    assert check.detail == (
        "KVM unusable, using TCG: /dev/kvm exists but QEMU exited 1: "
        "qemu-system-x86_64: error: failed to set MSR 0x48f to 0x0"
    )
    assert check.fix is not None and "AGENT_VM_ACCEL=tcg" in check.fix
    text = doctor.render(DoctorReport(ok=True, accelerator=chosen, checks=checks))
    assert "[warn] kvm: KVM unusable, using TCG" in text


def test_kvm_probe_arguments_and_success(
    kvm_node: Path, fake_qemu_dir: Path, tmp_path: Path
) -> None:
    """The probe exits 99 through isa-debug-exit when the guest ran."""
    record = tmp_path / "argv"
    write_fake_tool(fake_qemu_dir, accel.QEMU, f'printf "%s\\n" "$@" > "{record}"\nexit 99\n')
    checks, chosen = doctor.check_kvm()
    assert chosen == "kvm" and checks[0].ok
    assert checks[0].detail == "KVM usable: a test guest ran under KVM"
    argv = record.read_text().splitlines()
    assert argv[:2] == ["-accel", "kvm"]
    assert "isa-debug-exit,iobase=0xf4,iosize=0x04" in argv
    assert argv[argv.index("-bios") + 1].endswith("probe.bin")


def test_kvm_probe_that_hangs_times_out(fake_qemu_dir: Path) -> None:
    write_fake_tool(fake_qemu_dir, accel.QEMU, "exec sleep 30\n")
    usable, why = accel.kvm_probe(timeout=0.3)
    assert not usable
    assert why == "the test guest did not finish within 0.3s (status: no answer)"


def test_kvm_probe_without_qemu(tmp_path: Path) -> None:
    with local.env(PATH=str(tmp_path)):
        assert accel.kvm_probe() == (False, f"{accel.QEMU} not found")


def test_no_dev_kvm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_dev_kvm(monkeypatch, tmp_path / "absent")
    checks, chosen = doctor.check_kvm()
    assert chosen == "tcg" and "does not exist" in checks[0].detail and not checks[0].blocking


def test_missing_tool_check() -> None:
    c = doctor.check_tool("frob", ["no-such-tool-agent-vm", "--version"], r"(\d+)")
    assert not c.ok and c.blocking and c.detail == "no-such-tool-agent-vm not found on PATH"


def test_state_dir_checks(tmp_path: Path) -> None:
    root = tmp_path / "state"
    checks = doctor.check_state_dir(StateLayout(root))
    assert [c.name for c in checks] == ["state-dir"] and checks[0].ok
    assert "will be writable" in checks[0].detail
    root.mkdir(mode=0o755)
    root.chmod(0o755)
    checks = doctor.check_state_dir(StateLayout(root))
    assert checks[1].name == "state-dir-permissions" and not checks[1].ok
    assert checks[1].fix == f"chmod 700 {root}"


# --- doctor --json ------------------------------------------------------------------


def schema(capsys: pytest.CaptureFixture[str], name: str) -> dict[str, object]:
    res = run_cli(capsys, "schema", name)
    assert res.code == 0, res.err
    data: dict[str, object] = json.loads(res.out)
    return data


def test_doctor_json_validates(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    kvm_node: Path,
    fake_qemu_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    write_fake_tool(fake_qemu_dir, accel.QEMU, QEMU_VERSION + "exit 1\n")
    res = run_cli(capsys, "--state-dir", str(tmp_path / "s"), "doctor", "--json")
    data = json.loads(res.out)
    report = DoctorReport.model_validate(data)
    jsonschema.validate(data, schema(capsys, "doctor"))
    assert report.accelerator == "tcg"
    kvm = next(c for c in report.checks if c.name == "kvm")
    assert kvm.detail.startswith("KVM unusable, using TCG")
    assert next(c for c in report.checks if c.name == "qemu").detail == f"{accel.QEMU} 7.2.9"
    # The exit code follows the verdict.
    assert res.code == (0 if report.ok else 18)
    assert report.ok == all(c.ok for c in report.checks if c.blocking)


def test_doctor_without_nix_fails_with_exit_18(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    kvm_node: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    bindir = tmp_path / "bin"
    write_fake_tool(bindir, accel.QEMU, QEMU_VERSION + "exit 99\n")
    with local.env(PATH=str(bindir)):
        res = run_cli(capsys, "--state-dir", str(tmp_path / "s"), "doctor", "--json")
    assert res.code == 18
    assert res.err == ("agent-vm: error: something blocks 'agent-vm up' (see the FAIL lines)\n")
    report = DoctorReport.model_validate_json(res.out)
    jsonschema.validate(json.loads(res.out), schema(capsys, "doctor"))
    assert not report.ok
    nix = next(c for c in report.checks if c.name == "nix")
    assert not nix.ok and nix.blocking and nix.fix == "install Nix (https://nixos.org/download)"
    assert report.accelerator == "kvm"


def test_doctor_human_output(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    kvm_node: Path,
    fake_qemu_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    write_fake_tool(fake_qemu_dir, accel.QEMU, QEMU_VERSION + "exit 1\n")
    res = run_cli(capsys, "--state-dir", str(tmp_path / "s"), "doctor")
    assert "[warn] kvm: KVM unusable, using TCG" in res.out
    assert "accelerator: tcg" in res.out
    assert "Traceback" not in res.err
