"""doctor: each check's verdict, the KVM classification when the probe
fails (a fake QEMU), and `doctor --json` against its own schema."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import pytest
from agent_vm import accel, doctor, nixbuild
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


def fake_nix(
    bindir: Path,
    version: str = "nix (Nix) 2.31.2",
    config: str = "experimental-features = flakes nix-command",
    archive: str = 'echo \'{"path":"/nix/store/a-source","inputs":{"nixpkgs":{}}}\'',
) -> None:
    """`nix` answering doctor's three questions: --version, show-config
    (features), flake archive (fetching the flake's inputs)."""
    write_fake_tool(
        bindir,
        "nix",
        f"""case "$*" in
  --version) echo '{version}' ;;
  show-config|*" show-config") printf '%s\\n' '{config}' ;;
  *"flake archive --json "*) {archive} ;;
  *) echo "unexpected: $*" >&2; exit 99 ;;
esac
""",
    )


@pytest.fixture
def good_nix(fake_qemu_dir: Path) -> Path:
    fake_nix(fake_qemu_dir)
    return fake_qemu_dir


def probe_runner(layout: StateLayout, name: str, probe: str) -> Path:
    """A built VM (its runner link) whose runner's --kvm-probe runs `probe`."""
    vm = layout.vm(name)
    store_dir = layout.root.parent / f"store-{name}"
    (store_dir / "bin").mkdir(parents=True)
    runner = store_dir / "bin" / "run-agent-vm"
    runner.write_text(f'#!/bin/sh\nif [ "$1" = --kvm-probe ]; then {probe}; fi\nexit 3\n')
    runner.chmod(0o755)
    vm.dir.mkdir(parents=True)
    (vm.dir / "vm.json").write_text("{}")
    vm.runner_link.symlink_to(store_dir)
    return runner


def test_kvm_is_judged_by_a_vm_kernel_booted_under_it(kvm_node: Path, tmp_path: Path) -> None:
    layout = StateLayout(tmp_path / "state")
    probe_runner(layout, "main-0123abcd", "exec sleep 30")
    checks, chosen = doctor.check_kvm(layout, timeout=0.5)
    assert chosen == "tcg"
    (check,) = checks
    assert not check.ok and not check.blocking
    assert check.detail == (
        "KVM unusable, using TCG: /dev/kvm opens but a Linux kernel printed nothing within "
        "0.5s under KVM: it hangs (KVM runs firmware here, not Linux) (VM main-0123abcd)"
    )
    assert check.fix is not None and "TCG" in check.fix
    text = doctor.render(DoctorReport(ok=True, accelerator=chosen, checks=checks))
    assert "[warn] kvm: KVM unusable, using TCG" in text


def test_kvm_usable_when_the_kernel_reaches_its_panic(kvm_node: Path, tmp_path: Path) -> None:
    layout = StateLayout(tmp_path / "state")
    probe_runner(layout, "main-0123abcd", "echo 'Linux version 6'; echo 'Kernel panic - x'")
    checks, chosen = doctor.check_kvm(layout)
    assert chosen == "kvm" and checks[0].ok
    assert checks[0].detail.startswith("KVM usable: the VM's kernel booted under KVM")
    assert checks[0].detail.endswith("(VM main-0123abcd)")


def test_kvm_not_known_before_any_vm_is_built(kvm_node: Path, tmp_path: Path) -> None:
    checks, chosen = doctor.check_kvm(StateLayout(tmp_path / "state"))
    assert chosen == "auto"
    (check,) = checks
    assert not check.ok and not check.blocking
    assert "not known yet" in check.detail and check.fix and "agent-vm up" in check.fix


def test_no_dev_kvm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_dev_kvm(monkeypatch, tmp_path / "absent")
    checks, chosen = doctor.check_kvm(StateLayout(tmp_path / "state"))
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
    assert not checks[1].blocking
    assert checks[1].fix == f"chmod go-rx {root} if it is agent-vm's alone"


def test_a_state_dir_others_can_write_blocks_and_is_never_to_be_chmod_ed(tmp_path: Path) -> None:
    # `start` refuses it; doctor said "chmod 700 /tmp" once (losing its sticky bit).
    root = tmp_path / "shared"
    root.mkdir()
    root.chmod(0o1777)
    (perm,) = [c for c in doctor.check_state_dir(StateLayout(root)) if c.name.endswith("ions")]
    assert perm.blocking and not perm.ok
    assert perm.detail == (
        f"{root} can be written by other users (mode 1777); agent-vm keeps keys there"
    )
    assert perm.fix is not None and "chmod" not in perm.fix


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
    good_nix: Path,
    fake_qemu_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    write_fake_tool(fake_qemu_dir, accel.QEMU, QEMU_VERSION + "exit 1\n")
    res = run_cli(capsys, "--state-dir", str(tmp_path / "s"), "doctor", "--json")
    data = json.loads(res.out)
    report = DoctorReport.model_validate(data)
    jsonschema.validate(data, schema(capsys, "doctor"))
    assert report.accelerator == "auto"  # no VM built yet to test KVM with
    kvm = next(c for c in report.checks if c.name == "kvm")
    assert "not known yet" in kvm.detail
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
    assert not nix.ok and nix.blocking
    assert nix.fix == "install Nix 2.18 or newer (https://nixos.org/download)"
    assert report.accelerator == "auto"


def test_doctor_human_output(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    kvm_node: Path,
    good_nix: Path,
    fake_qemu_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    write_fake_tool(fake_qemu_dir, accel.QEMU, QEMU_VERSION + "exit 1\n")
    res = run_cli(capsys, "--state-dir", str(tmp_path / "s"), "doctor")
    assert "[warn] kvm: /dev/kvm opens, but whether Linux runs under it is not known" in res.out
    assert "accelerator: auto" in res.out
    assert "Traceback" not in res.err


# --- Nix: version, features, the flake and its inputs --------------------------------


@pytest.mark.parametrize(
    ("line", "ok"),
    [
        ("nix (Nix) 2.8.0", False),
        ("nix (Nix) 2.17.1", False),
        ("nix (Nix) 2.18.0", True),
        ("nix (Nix) 2.31.2", True),
        ("nix (Determinate Nix 3.8.2) 2.30.1", True),
        ("nix (Lix, like Nix) 2.91.1", True),
    ],
)
def test_nix_must_be_as_new_as_the_pinned_nixpkgs_needs(
    fake_qemu_dir: Path, line: str, ok: bool
) -> None:
    """nixos-25.11's lib/minfeatures.nix asks for 2.18; flakes alone
    (2.4) are not enough."""
    fake_nix(fake_qemu_dir, version=line)
    check, version = doctor.check_nix()
    assert version is not None and version.line == line
    assert check.ok is ok and check.blocking
    if not ok:
        assert check.detail == (
            f"nix {version.number}: the pinned nixpkgs (nixos-25.11) needs Nix 2.18 or newer"
            " (its lib/minfeatures.nix)"
        )
        assert check.fix == "upgrade Nix to 2.18 or newer (https://nixos.org/download)"


@pytest.mark.parametrize(
    ("config", "off"),
    [
        ("experimental-features = flakes nix-command", []),
        ("experimental-features = nix-command", ["flakes"]),
        ("experimental-features = ", ["nix-command", "flakes"]),
    ],
)
def test_doctor_says_which_experimental_features_are_off(
    fake_qemu_dir: Path, config: str, off: list[str]
) -> None:
    fake_nix(fake_qemu_dir, config=config)
    _, version = doctor.check_nix()
    check = doctor.check_nix_features(version)
    assert check.ok is (off == []) and not check.blocking
    if off:
        assert check.detail.startswith(
            " and ".join(off) + (" is off" if len(off) == 1 else " are off")
        )
        assert check.fix is not None and "experimental-features = nix-command flakes" in check.fix


def test_without_nix_command_show_config_itself_fails(fake_qemu_dir: Path) -> None:
    """Nix's own refusal (here Nix 2.18's wording) tells that nix-command
    is off; asked again with it on, Nix tells about flakes."""
    write_fake_tool(
        fake_qemu_dir,
        "nix",
        """case "$*" in
  --version) echo 'nix (Nix) 2.18.1' ;;
  show-config) echo "error: experimental Nix feature 'nix-command' is disabled;"\
" use '--extra-experimental-features nix-command' to override" >&2; exit 1 ;;
  "--extra-experimental-features nix-command show-config")
    echo 'experimental-features = nix-command' ;;
  *) exit 99 ;;
esac
""",
    )
    _, version = doctor.check_nix()
    check = doctor.check_nix_features(version)
    assert check.detail.startswith("nix-command and flakes are off in your Nix configuration")


def test_determinate_nix_has_them_stable(fake_qemu_dir: Path) -> None:
    fake_nix(fake_qemu_dir, version="nix (Determinate Nix 3.8.2) 2.30.1", config="")
    _, version = doctor.check_nix()
    assert doctor.check_nix_features(version).ok


@pytest.fixture
def checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory with a flake.nix that AGENT_VM_FLAKE names."""
    path = tmp_path / "agent-vm"
    path.mkdir()
    (path / "flake.nix").write_text("{ }\n")
    monkeypatch.setenv("AGENT_VM_FLAKE", f"path:{path}")
    return path


def test_the_flake_check_and_its_inputs(fake_qemu_dir: Path, checkout: Path) -> None:
    fake_nix(fake_qemu_dir)
    flake, ref = doctor.check_flake()
    assert flake.ok and flake.detail == f"path:{checkout} (from AGENT_VM_FLAKE)"
    _, version = doctor.check_nix()
    inputs = doctor.check_flake_inputs(ref, version)
    assert inputs.ok and inputs.blocking and inputs.detail == "fetched, narHash as locked: nixpkgs"


def test_no_flake_blocks_and_its_inputs_are_not_checked(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, fake_qemu_dir: Path
) -> None:
    monkeypatch.delenv("AGENT_VM_FLAKE", raising=False)
    monkeypatch.setattr(nixbuild, "__file__", str(tmp_path / "agent_vm" / "nixbuild.py"))
    fake_nix(fake_qemu_dir, archive="exit 99")
    flake, ref = doctor.check_flake()
    assert not flake.ok and flake.blocking and ref is None
    assert flake.detail.startswith("no agent-vm flake to build VMs from")
    assert flake.fix is not None and "AGENT_VM_FLAKE" in flake.fix
    _, version = doctor.check_nix()
    inputs = doctor.check_flake_inputs(ref, version)
    assert not inputs.ok and inputs.detail.startswith("not checked")


# `nix flake archive`'s stderr when the lock's narHash is not what this Nix
# computes (Nix 2.19+ wording, NixOS/nix src/libfetchers/fetchers.cc).
NAR_MISMATCH = (
    "error:\n       … while updating the lock file of flake 'path:/src/agent-vm'\n\n"
    "       error: NAR hash mismatch in input 'github:NixOS/nixpkgs/"
    "8fd9daa3db09ced9700431c5b7ad0e8ba199b575?narHash=sha256-Ti%2BZBvW6yrWWAg2szExVTwCd4qOJ3KlVr1tFHfyfi8Q%3D'"
    ", expected 'sha256-Ti+ZBvW6yrWWAg2szExVTwCd4qOJ3KlVr1tFHfyfi8Q=' but got "
    "'sha256-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA='"
)


def test_a_refused_narhash_is_explained(
    fake_qemu_dir: Path, checkout: Path, tmp_path: Path
) -> None:
    (tmp_path / "stderr").write_text(NAR_MISMATCH)
    fake_nix(fake_qemu_dir, archive=f"cat '{tmp_path}/stderr' >&2; exit 1")
    _, version = doctor.check_nix()
    check = doctor.check_flake_inputs(doctor.check_flake()[1], version)
    assert not check.ok and check.blocking
    assert check.detail == (
        "Nix refuses the agent-vm flake's lock: github:NixOS/nixpkgs/"
        "8fd9daa3db09ced9700431c5b7ad0e8ba199b575 does not have the narHash flake.lock records"
    )
    assert check.fix == (
        "re-lock nixpkgs with your Nix: 'nix flake lock --update-input nixpkgs' "
        f"in {checkout} (README: Re-locking nixpkgs)"
    )


def test_another_fetch_failure_shows_nixs_error(fake_qemu_dir: Path) -> None:
    fake_nix(
        fake_qemu_dir,
        archive="echo 'error: unable to download https://github.com/x: "
        "Couldn'\\''t resolve host name' >&2; exit 1",
    )
    _, version = doctor.check_nix()
    check = doctor.check_flake_inputs("github:example/agent-vm", version)
    assert not check.ok and check.blocking
    assert check.detail == (
        "nix flake archive failed: error: unable to download https://github.com/x: "
        "Couldn't resolve host name"
    )


def test_features_unknown_when_nix_does_not_say(fake_qemu_dir: Path) -> None:
    write_fake_tool(
        fake_qemu_dir,
        "nix",
        """case "$*" in
  --version) echo 'nix (Nix) 2.24.1' ;;
  *) echo 'error: cannot open the Nix database' >&2; exit 1 ;;
esac
""",
    )
    _, version = doctor.check_nix()
    check = doctor.check_nix_features(version)
    assert not check.ok and not check.blocking
    assert check.detail == "not checked: 'nix show-config' did not answer"
    assert doctor.check_nix_features(None).detail == "not checked: no working nix"
