"""`status` and `list` start fast: they never load what only changing a VM
needs (the lifecycle, the build, the readiness wait), plumbum (whose import
alone costs several times Python's own start-up) or http.client. Timings
are bench/'s job; this pins what is imported, so it cannot regress
silently. Each command runs in a fresh interpreter."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from agent_vm.names import vm_name
from agent_vm.paths import StateLayout
from unit_fakes import GIT_ENV, SRC, make_repo, vm_config, write_vm

FORBIDDEN = (
    "plumbum",
    "http.client",
    "agent_vm.lifecycle",
    "agent_vm.nixbuild",
    "agent_vm.readiness",
    "agent_vm.accel",
    "agent_vm.doctor",
    "agent_vm.ssh",
    "agent_vm.health",
    # (egress.patterns is a leaf the models' validators use)
    "agent_vm.egress.verbs",
    "agent_vm.egress.setup",
    "agent_vm.egress.netlog",
    "agent_vm.egress.process",
)

# Runs the CLI in-process, then reports which of FORBIDDEN it loaded.
_PROBE = """
import json, sys
from agent_vm import cli
code = cli.main(sys.argv[2:])
loaded = [m for m in json.loads(sys.argv[1]) if m in sys.modules]
print(json.dumps({"code": code, "loaded": loaded}))
"""


def loaded_by(cwd: Path, *argv: str) -> list[str]:
    res = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(FORBIDDEN), *argv],
        cwd=cwd,
        env={**os.environ, **GIT_ENV, "PYTHONPATH": str(SRC)},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    out = json.loads(res.stdout.splitlines()[-1])
    assert out["code"] == 0, res.stderr
    loaded: list[str] = out["loaded"]
    return loaded


@pytest.fixture
def repo_with_vms(tmp_path: Path) -> tuple[Path, Path]:
    repo = make_repo(tmp_path / "repo")
    state = tmp_path / "state"
    for branch in ("main", "feature"):
        name = vm_name(str(repo), branch)
        write_vm(StateLayout(state), vm_config(name, branch=branch, repo=str(repo)))
    return repo, state


@pytest.mark.parametrize(
    "argv",
    [
        ["list"],
        ["list", "--json"],
        ["status"],
        ["status", "feature"],
        ["status", "--json", "feature"],
    ],
)
def test_status_and_list_load_nothing_they_do_not_use(
    repo_with_vms: tuple[Path, Path], argv: list[str]
) -> None:
    repo, state = repo_with_vms
    assert loaded_by(repo, "--state-dir", str(state), *argv) == []


def test_the_probe_sees_what_a_changing_command_loads(repo_with_vms: tuple[Path, Path]) -> None:
    """The check above can fail: `update` does load the lifecycle."""
    repo, state = repo_with_vms
    loaded = loaded_by(repo, "--state-dir", str(state), "update", "--memory", "4096")
    assert "agent_vm.lifecycle" in loaded
