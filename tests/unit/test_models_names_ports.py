"""Exit codes, models, names, ports, state transitions, CLI errors: no fakes needed."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest
from agent_vm import cli, errors, ports, store
from agent_vm.errors import AgentVmError, CorruptState, InvalidInput, PortUnavailable
from agent_vm.models import Runtime, VmParams, VmState
from agent_vm.names import is_vm_name, vm_name
from agent_vm.paths import StateLayout
from agent_vm.state import transition
from pydantic import ValidationError

ROOT = Path(__file__).resolve().parents[2]


def error_classes() -> list[type[AgentVmError]]:
    return [
        c
        for c in vars(errors).values()
        if isinstance(c, type) and issubclass(c, AgentVmError) and c is not AgentVmError
    ]


def test_every_failure_kind_has_its_own_documented_exit_code() -> None:
    codes = [c.exit_code for c in error_classes()]
    assert len(codes) == len(set(codes)), codes
    readme = (ROOT / "README.md").read_text()
    table = dict(re.findall(r"^\| (\d+) \| (.+?) \|$", readme, flags=re.M))
    for c in error_classes():
        assert str(c.exit_code) in table, f"{c.__name__} ({c.exit_code}) is not in the README"
    assert set(table) - {"0", "1"} == {str(c) for c in codes}


CONTRACT_EXAMPLE = {
    "version": 1,
    "name": "feature-x-1a2b3c4d",
    "branch": "feature/x",
    "stateDir": "/s/vms/feature-x-1a2b3c4d",
    "hostAddress": "127.0.0.1",
    "sshPort": 2222,
    "agentPort": 8000,
    "guestAgentPort": 8000,
    "memoryMiB": 2048,
    "cores": 2,
    "diskSizeMiB": 8192,
    "network": "open",
    "share": "9p",
    "workspace": {
        "hostPath": "/s/vms/feature-x-1a2b3c4d/workspace",
        "tag": "workspace",
        "mountPoint": "/workspace",
        "securityModel": "none",
    },
    "user": {"name": "dev", "uid": 1000, "gid": 1000},
    "sshAuthorizedKeys": ["ssh-ed25519 AAAA agent-vm@x"],
    "userModule": None,
}


def test_params_json_is_the_documented_contract() -> None:
    params = VmParams.model_validate(CONTRACT_EXAMPLE)
    import json

    assert json.loads(params.to_json()) == CONTRACT_EXAMPLE
    for bad in ({"sshPort": 80}, {"memoryMiB": 1}, {"cores": 0}, {"network": "bridge"}):
        with pytest.raises(ValidationError):
            VmParams.model_validate(CONTRACT_EXAMPLE | bad)


def test_corrupt_state_names_the_file_and_the_fix(tmp_path: Path) -> None:
    vm = StateLayout(tmp_path).vm("main-0123abcd")
    vm.dir.mkdir(parents=True)
    vm.config.write_text('{"name": "main-01')
    with pytest.raises(CorruptState) as exc:
        store.load_config(vm)
    assert str(vm.config) in exc.value.message
    assert exc.value.hint is not None and "destroy --force main-0123abcd" in exc.value.hint
    vm.runtime.write_text('{"state": "dancing"}')
    with pytest.raises(CorruptState, match=r"runtime\.json is corrupt"):
        store.load_runtime(vm)


HOSTILE = [
    "feature/x",
    "../../etc/passwd",
    "-rf",
    "with space",
    "fé/ünï",
    "quote'\"",
    "$(touch x)",
    "a" * 300,
    "..",
    "",
]


def test_names_are_safe_short_unique_and_stable() -> None:
    names = [vm_name("/repo", b) for b in HOSTILE]
    assert len(set(names)) == len(names)
    for n in names:
        assert is_vm_name(n), n
        assert re.fullmatch(r"[a-z0-9][a-z0-9-]*", n) and len(n) <= 49, n
        assert "/" not in n and ".." not in n
    assert vm_name("/repo", "feature/x") == names[0]
    assert vm_name("/other", "feature/x") != names[0]


def test_ports_skip_bound_and_reserved_ones() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        busy = s.getsockname()[1]
        got = ports.allocate("127.0.0.1", busy, taken={busy + 1})
        assert got not in (busy, busy + 1) and got > busy
        with pytest.raises(PortUnavailable, match="in use"):
            ports.require("127.0.0.1", busy, set(), "SSH")
        with pytest.raises(PortUnavailable, match="another VM"):
            ports.require("127.0.0.1", busy + 1, {busy + 1}, "SSH")
    with pytest.raises(PortUnavailable):
        ports.allocate("127.0.0.1", 65535, taken={65535})


def test_only_legal_transitions() -> None:
    rt = Runtime()
    transition(rt, VmState.STARTING, "vm")
    with pytest.raises(AgentVmError):
        transition(Runtime(state=VmState.STOPPED), VmState.STOPPING, "vm")


@pytest.mark.parametrize(
    ("argv", "code", "words"),
    [
        (["create", "--port", "70000"], 2, "between 1024 and 65535"),
        (["create", "--memory", "0"], 2, "memory"),
        (["create", "--cores", "x"], 2, "whole number"),
        (["frobnicate"], 2, "invalid choice"),
        (["status", "no-such-vm"], 3, "no VM"),
    ],
)
def test_bad_input_is_one_line_without_traceback(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    argv: list[str],
    code: int,
    words: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        raise SystemExit(cli.main(["--state-dir", str(tmp_path / "s"), *argv]))
    assert exc.value.code == code
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err
    lines = err.strip().splitlines()
    assert lines[0].startswith("agent-vm: error: ") and len(lines) <= 2


def test_state_dir_ssh_cannot_take_is_refused(tmp_path: Path) -> None:
    from agent_vm.paths import check_state_dir

    with pytest.raises(InvalidInput):
        check_state_dir(tmp_path / "a${HOME}")
    assert check_state_dir(Path("rel")).is_absolute()
