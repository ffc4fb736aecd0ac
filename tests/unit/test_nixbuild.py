"""nixbuild: the exact `nix build` command line (docs/contract.md), its
environment, and what a failing build tells the user."""

from __future__ import annotations

import json
import os
from pathlib import Path

import agent_vm
import pytest
from agent_vm import nixbuild, store
from agent_vm.errors import BuildFailed, FlakeNotFound, MissingTool
from agent_vm.models import VmState
from agent_vm.paths import StateLayout, VmPaths
from plumbum import local
from pytest_subprocess import FakeProcess
from unit_fakes import DATA, LAUNCH_ENVS, ROOT, make_repo, run_cli, write_fake_tool

FAILED_LOG = DATA / "nix-internal-json-failed-build.txt"


def vm_paths(tmp_path: Path, name: str = "main-0123abcd") -> VmPaths:
    vm = StateLayout(tmp_path / "state").vm(name)
    vm.dir.mkdir(parents=True)
    return vm


def test_the_package_under_test_is_this_checkout() -> None:
    assert Path(agent_vm.__file__).resolve().parent == ROOT / "python" / "agent_vm"


def test_build_argv_is_pinned_exactly(tmp_path: Path) -> None:
    vm = vm_paths(tmp_path)
    assert nixbuild.build_argv("path:/flake", "x86_64-linux", vm.runner_link) == [
        "nix",
        "--extra-experimental-features",
        "nix-command flakes",
        "build",
        "--impure",
        "--log-format",
        "internal-json",
        "--print-build-logs",
        "--out-link",
        f"{vm.dir}/runner",
        "path:/flake#legacyPackages.x86_64-linux.agent-vm-runner",
    ]


def test_build_argv_keeps_a_hostile_state_dir_one_argument(tmp_path: Path) -> None:
    vm = StateLayout(tmp_path / "a b;$(x),'\"").vm("main-0123abcd")
    argv = nixbuild.build_argv("path:/f", "x86_64-linux", vm.runner_link)
    assert argv[argv.index("--out-link") + 1] == f"{tmp_path}/a b;$(x),'\"/vms/main-0123abcd/runner"
    assert len(argv) == 11


def test_build_runs_nix_with_params_in_the_environment(fp: FakeProcess, tmp_path: Path) -> None:
    vm = vm_paths(tmp_path)
    argv = nixbuild.build_argv("path:/f", nixbuild.host_system(), vm.runner_link)
    seen: dict[str, str | None] = {}

    def make_runner(process: object) -> None:
        env = getattr(process, "kwargs", {}).get("env") or {}
        seen["params"] = env.get("AGENT_VM_PARAMS")
        (vm.runner_link / "bin").mkdir(parents=True)
        vm.runner.write_text("#!/bin/sh\n")

    fp.register(argv, stderr='@nix {"action":"stop","id":1}\n', callback=make_runner)
    assert nixbuild.build(vm, "path:/f") == vm.runner
    assert fp.call_count(argv) == 1
    assert seen["params"] == str(vm.params)
    assert LAUNCH_ENVS[-1]["AGENT_VM_PARAMS"] == str(vm.params)
    # The rest of the user's environment is kept (PATH, HOME, NIX_*).
    assert "PATH" in LAUNCH_ENVS[-1]
    assert vm.build_log.exists()


def test_build_for_real_with_a_fake_nix(tmp_path: Path) -> None:
    """A real process: argv and AGENT_VM_PARAMS as the fake nix receives them."""
    vm = vm_paths(tmp_path)
    bindir = tmp_path / "bin"
    record = tmp_path / "record"
    write_fake_tool(
        bindir,
        "nix",
        f'printf "%s\\n" "$@" > "{record}.argv"\n'
        f'printf "%s" "$AGENT_VM_PARAMS" > "{record}.params"\n'
        'out=""; while [ $# -gt 0 ]; do [ "$1" = --out-link ] && out="$2"; shift; done\n'
        'mkdir -p "$out/bin" && printf "#!/bin/sh\\n" > "$out/bin/run-agent-vm"\n'
        'echo \'@nix {"action":"msg","level":3,"msg":"fine"}\' >&2\n',
    )
    with local.env(PATH=f"{bindir}:{os.environ['PATH']}"):
        runner = nixbuild.build(vm, "path:/the flake")
    assert runner == vm.runner and runner.exists()
    assert (
        Path(f"{record}.argv").read_text().splitlines()
        == nixbuild.build_argv("path:/the flake", nixbuild.host_system(), vm.runner_link)[1:]
    )
    assert Path(f"{record}.params").read_text() == str(vm.params)
    assert vm.build_log.read_text() == '@nix {"action":"msg","level":3,"msg":"fine"}\n'


def test_failed_build_raises_with_the_failing_derivations_log_tail(
    fp: FakeProcess, tmp_path: Path
) -> None:
    vm = vm_paths(tmp_path)
    argv = nixbuild.build_argv("path:/f", nixbuild.host_system(), vm.runner_link)
    log = FAILED_LOG.read_text()
    fp.register(argv, stderr=log, returncode=1)
    with pytest.raises(BuildFailed) as exc:
        nixbuild.build(vm, "path:/f")
    assert exc.value.exit_code == 8
    assert exc.value.message == f"nix build failed (exit 1); full log: {vm.build_log}"
    assert exc.value.detail == "log of bad:\nfailing-now"
    # The whole log is kept for the user.
    assert vm.build_log.read_text() == log


def test_failed_evaluation_shows_nix_error_messages(fp: FakeProcess, tmp_path: Path) -> None:
    vm = vm_paths(tmp_path)
    argv = nixbuild.build_argv("path:/f", nixbuild.host_system(), vm.runner_link)
    fp.register(
        argv,
        stderr='@nix {"action":"msg","level":0,"msg":"\\u001b[31;1merror:\\u001b[0m '
        'agent-vm params: unsupported version 2"}\n',
        returncode=1,
    )
    with pytest.raises(BuildFailed) as exc:
        nixbuild.build(vm, "path:/f")
    assert exc.value.detail == "error: agent-vm params: unsupported version 2"


def test_a_build_that_makes_no_runner_is_a_failure(fp: FakeProcess, tmp_path: Path) -> None:
    vm = vm_paths(tmp_path)
    fp.register(nixbuild.build_argv("path:/f", nixbuild.host_system(), vm.runner_link))
    with pytest.raises(BuildFailed, match="produced no"):
        nixbuild.build(vm, "path:/f")


def test_missing_nix_is_a_missing_tool(tmp_path: Path) -> None:
    vm = vm_paths(tmp_path)
    # plumbum keeps its own copy of the environment.
    with local.env(PATH=str(tmp_path)), pytest.raises(MissingTool) as exc:
        nixbuild.build(vm, "path:/f")
    assert exc.value.exit_code == 9
    assert exc.value.message == "'nix' was not found on PATH"
    assert exc.value.hint is not None and "nixos.org" in exc.value.hint


def test_default_flake_honours_agent_vm_flake(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENT_VM_FLAKE", "github:example/agent-vm")
    assert nixbuild.default_flake() == "github:example/agent-vm"


def test_default_flake_is_the_checkout_when_unset(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The nearest parent of the package with flake.nix and lib/default.nix."""
    checkout = tmp_path / "check out"
    (checkout / "lib").mkdir(parents=True)
    (checkout / "flake.nix").write_text("{ }\n")
    (checkout / "lib" / "default.nix").write_text("{ }: { }\n")
    (checkout / "python" / "flake.nix").mkdir(parents=True)  # a directory: not a flake
    monkeypatch.setattr(nixbuild, "__file__", str(checkout / "python" / "agent_vm" / "nixbuild.py"))
    monkeypatch.delenv("AGENT_VM_FLAKE", raising=False)
    assert nixbuild.default_flake() == f"path:{checkout}"
    monkeypatch.setenv("AGENT_VM_FLAKE", "")
    assert nixbuild.default_flake() == f"path:{checkout}"


def test_default_flake_missing_is_its_own_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A pip-installed CLI has no checkout above it and no AGENT_VM_FLAKE:
    not a failed build (exit 8) but a missing flake, with what to do."""
    monkeypatch.delenv("AGENT_VM_FLAKE", raising=False)
    monkeypatch.setattr(nixbuild, "__file__", str(tmp_path / "agent_vm" / "nixbuild.py"))
    with pytest.raises(FlakeNotFound) as exc:
        nixbuild.default_flake()
    assert exc.value.exit_code == 19
    assert exc.value.message == (
        "no agent-vm flake to build VMs from: this agent-vm was installed without one"
    )
    assert exc.value.hint is not None
    assert "AGENT_VM_FLAKE" in exc.value.hint and "nix run github:" in exc.value.hint


def test_agent_vm_flake_must_name_a_flake_when_it_names_a_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for ref in (f"path:{tmp_path}", str(tmp_path), f"path:{tmp_path}?dir=x"):
        monkeypatch.setenv("AGENT_VM_FLAKE", ref)
        with pytest.raises(FlakeNotFound, match=f"there is no flake.nix in {tmp_path}$"):
            nixbuild.default_flake()
    (tmp_path / "flake.nix").write_text("{ }\n")
    monkeypatch.setenv("AGENT_VM_FLAKE", f"path:{tmp_path}")
    assert nixbuild.default_flake() == f"path:{tmp_path}"
    # Remote references are Nix's to resolve.
    monkeypatch.setenv("AGENT_VM_FLAKE", "github:example/agent-vm")
    assert nixbuild.default_flake() == "github:example/agent-vm"


def test_up_without_a_flake_exits_19_and_leaves_the_vm_stopped(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("AGENT_VM_FLAKE", raising=False)
    monkeypatch.setattr(nixbuild, "__file__", str(tmp_path / "agent_vm" / "nixbuild.py"))
    monkeypatch.setenv("AGENT_VM_ACCEL", "tcg")
    monkeypatch.chdir(make_repo(tmp_path / "repo"))
    state = tmp_path / "state"
    res = run_cli(capsys, "--state-dir", str(state), "up")
    assert res.code == 19
    assert res.err.splitlines()[-2:] == [
        "agent-vm: error: no agent-vm flake to build VMs from: "
        "this agent-vm was installed without one",
        "agent-vm: hint: run it as 'nix run github:<owner>/agent-vm -- up', or set "
        "AGENT_VM_FLAKE to the flake (github:<owner>/agent-vm, or path:/src/agent-vm "
        "for a checkout)",
    ]
    (name,) = store.vm_names(StateLayout(state))
    assert store.load_runtime(StateLayout(state).vm(name)).state is VmState.STOPPED


# Nix's error when a locked input's contents hash differently (NixOS/nix
# src/libfetchers/fetchers.cc), as `nix build --log-format internal-json`
# writes it (JSONLogger::logEI; Nix colours the format's arguments): the
# wording of Nix 2.19 and later, then that of 2.4 to 2.18.
_LOCKED = "github:NixOS/nixpkgs/8fd9daa3db09ced9700431c5b7ad0e8ba199b575"
_QUERY = "?narHash=sha256-Ti%2BZBvW6yrWWAg2szExVTwCd4qOJ3KlVr1tFHfyfi8Q%3D"
_LOCK_HASH = "sha256-Ti+ZBvW6yrWWAg2szExVTwCd4qOJ3KlVr1tFHfyfi8Q="
_GOT_HASH = "sha256-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
_ERROR = "\x1b[31;1merror:\x1b[0m"


def _arg(text: str) -> str:
    return f"\x1b[35;1m{text}\x1b[0m"


def _nix_error(text: str) -> str:
    raw = text.rsplit(f"{_ERROR} ", maxsplit=1)[-1]
    msg = {"action": "msg", "level": 0, "msg": text, "raw_msg": raw}
    return "@nix " + json.dumps(msg, ensure_ascii=False) + "\n"


NAR_MISMATCH_LOGS = [
    _nix_error(
        f"{_ERROR}\n       … while updating the lock file of flake 'path:/src/agent-vm'\n\n"
        f"       {_ERROR} NAR hash mismatch in input '{_arg(_LOCKED + _QUERY)}', "
        f"expected '{_arg(_LOCK_HASH)}' but got '{_arg(_GOT_HASH)}'"
    ),
    _nix_error(
        f"{_ERROR} NAR hash mismatch in input '{_arg(_LOCKED + _QUERY)}' "
        f"({_arg('/nix/store/00000000000000000000000000000000-source')}), "
        f"expected '{_arg(_LOCK_HASH)}', got '{_arg(_GOT_HASH)}'"
    ),
]


@pytest.mark.parametrize("log", NAR_MISMATCH_LOGS, ids=["nix-2.19+", "nix-2.4-2.18"])
def test_a_refused_narhash_says_how_to_relock(fp: FakeProcess, tmp_path: Path, log: str) -> None:
    vm = vm_paths(tmp_path)
    checkout = tmp_path / "agent-vm"
    flake = f"path:{checkout}"
    argv = nixbuild.build_argv(flake, nixbuild.host_system(), vm.runner_link)
    fp.register(argv, stderr=log, returncode=1)
    with pytest.raises(BuildFailed) as exc:
        nixbuild.build(vm, flake)
    assert exc.value.message == (
        f"Nix refuses the agent-vm flake's lock: {_LOCKED} does not have the narHash "
        f"flake.lock records; full log: {vm.build_log}"
    )
    assert exc.value.hint == (
        "re-lock nixpkgs with your Nix: 'nix flake lock --update-input nixpkgs' "
        f"in {checkout} (README: Re-locking nixpkgs)"
    )
    assert exc.value.detail is not None and "NAR hash mismatch in input" in exc.value.detail


@pytest.mark.parametrize(
    ("machine", "system"),
    [
        ("x86_64", "x86_64-linux"),
        ("AMD64", "x86_64-linux"),
        ("aarch64", "aarch64-linux"),
        ("arm64", "aarch64-linux"),
    ],
)
def test_host_system(monkeypatch: pytest.MonkeyPatch, machine: str, system: str) -> None:
    monkeypatch.setattr(nixbuild.platform, "machine", lambda: machine)
    assert nixbuild.host_system() == system
