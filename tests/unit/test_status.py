"""status and list, and `agent-vm schema`: the schema each --json output
documents validates what the commands really print."""

from __future__ import annotations

import json
import socket
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from agent_vm import procs, status
from agent_vm.context import Context
from agent_vm.models import Runtime, StageTiming, VmState
from agent_vm.paths import StateLayout
from unit_fakes import make_repo, run_cli, spawn_exec, vm_config, write_vm


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path / "state"


@pytest.fixture
def layout(state: Path) -> StateLayout:
    return StateLayout(state)


def schema_of(capsys: pytest.CaptureFixture[str], output: str) -> dict[str, Any]:
    res = run_cli(capsys, "schema", output)
    assert res.code == 0, res.err
    data: dict[str, Any] = json.loads(res.out)
    jsonschema.Draft202012Validator.check_schema(data)
    return data


def json_of(capsys: pytest.CaptureFixture[str], state: Path, *argv: str) -> Any:
    res = run_cli(capsys, "--state-dir", str(state), *argv)
    assert res.code == 0, res.err
    return json.loads(res.out)


@pytest.fixture
def running_vm(layout: StateLayout) -> Iterator[str]:
    """A VM recorded running whose 'QEMU' (a sleeping process naming the
    VM dir) is alive; its ports answer nothing."""
    cfg = vm_config("run-0123abcd", ssh_port=closed_port(), agent_port=closed_port())
    vm = write_vm(layout, cfg)
    proc = spawn_exec([sys.executable, "-c", "import time; time.sleep(60)", f"{vm.dir}/qemu.pid"])
    rt = Runtime(
        state=VmState.RUNNING,
        pid=proc.pid,
        pid_start_time=procs.start_time(proc.pid),
        ssh_port=cfg.ssh_port,
        agent_port=cfg.agent_port,
        started_at=datetime.now(UTC) - timedelta(seconds=90),
        stages=[StageTiming(stage="build", seconds=1.0, ok=True)],
    )
    write_vm(layout, cfg, rt)
    yield cfg.name
    proc.kill()
    proc.wait()


def test_status_json_validates_for_every_state(
    capsys: pytest.CaptureFixture[str], state: Path, layout: StateLayout, running_vm: str
) -> None:
    sch = schema_of(capsys, "status")
    write_vm(layout, vm_config("stop-0123abcd"))
    write_vm(
        layout,
        vm_config("dead-0123abcd"),
        Runtime(state=VmState.RUNNING, pid=2**22 + 1, pid_start_time=1),
    )
    write_vm(layout, vm_config("fail-0123abcd"), Runtime(state=VmState.FAILED, reason="timeout"))
    seen = {}
    for name in ("stop-0123abcd", "dead-0123abcd", "fail-0123abcd", running_vm):
        data = json_of(capsys, state, "status", name, "--json")
        jsonschema.validate(data, sch)
        status.VmStatus.model_validate(data)
        seen[name] = data
    assert seen["stop-0123abcd"]["state"] == "stopped" and seen["stop-0123abcd"]["pid"] is None
    # QEMU killed behind our back: failed, with the reason.
    assert seen["dead-0123abcd"]["state"] == "failed"
    assert "exited unexpectedly while running" in seen["dead-0123abcd"]["reason"]
    assert seen["fail-0123abcd"]["reason"] == "timeout"
    run = seen[running_vm]
    assert run["state"] == "running" and run["pid"] is not None
    assert 89 <= run["uptime_seconds"] < 200
    assert run["ssh_reachable"] is False and run["agent_reachable"] is False
    assert run["stages"] == [{"stage": "build", "seconds": 1.0, "ok": True}]
    assert run["schema_version"] == 1


def test_list_json_validates_with_a_broken_vm(
    capsys: pytest.CaptureFixture[str], state: Path, layout: StateLayout
) -> None:
    sch = schema_of(capsys, "list")
    assert json_of(capsys, state, "list", "--json") == {"schema_version": 1, "vms": []}
    write_vm(layout, vm_config("a-0123abcd"))
    broken = write_vm(layout, vm_config("b-0123abcd", ssh_port=2223, agent_port=8001))
    broken.config.write_text("{")
    data = json_of(capsys, state, "list", "--json")
    jsonschema.validate(data, sch)
    assert [(r["name"], r["state"]) for r in data["vms"]] == [
        ("a-0123abcd", "stopped"),
        ("b-0123abcd", "broken"),
    ]


def test_create_json_validates(
    capsys: pytest.CaptureFixture[str], state: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = make_repo(tmp_path / "repo")
    monkeypatch.chdir(repo)
    data = json_of(capsys, state, "create", "--json", "--memory", "1024")
    jsonschema.validate(data, schema_of(capsys, "create"))
    assert data["state"] == "stopped" and data["branch"] == "main"
    assert data["repo"] == str(repo)


def test_event_lines_validate(
    capsys: pytest.CaptureFixture[str], state: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = make_repo(tmp_path / "repo")
    monkeypatch.chdir(repo)
    res = run_cli(capsys, "--state-dir", str(state), "--log-format", "json", "-d", "create")
    assert res.code == 0, res.err
    sch = schema_of(capsys, "event")
    lines = res.err.splitlines()
    assert lines
    for line in lines:
        jsonschema.validate(json.loads(line), sch)


def test_every_schema_is_valid_json_schema(capsys: pytest.CaptureFixture[str]) -> None:
    for output in ("status", "list", "doctor", "create", "start", "event"):
        assert schema_of(capsys, output)["type"] == "object"


# --- rendering ----------------------------------------------------------------------


def test_render_status_and_list(layout: StateLayout, running_vm: str) -> None:
    ctx = Context(layout=layout)
    write_vm(layout, vm_config("stop-0123abcd"))
    st = status.status(ctx, layout.vm(running_vm), probe=False)
    text = status.render_status(st)
    assert f"VM:        {running_vm}" in text
    assert "state:     running" in text and "uptime:" in text and "stages:    build 1.0s" in text
    assert "(reachable: -)" in text  # not probed
    table = status.render_list(status.list_all(ctx)).splitlines()
    assert table[0].split() == ["NAME", "BRANCH", "STATE", "SSH", "AGENT"]
    assert table[1].split()[:3] == [running_vm, "main", "running"]
    assert table[2].split() == ["stop-0123abcd", "main", "stopped", "2222", "8000"]
    assert status.render_list([]) == "no VMs"


def test_status_text_of_a_failed_vm(
    capsys: pytest.CaptureFixture[str], state: Path, layout: StateLayout
) -> None:
    write_vm(layout, vm_config(), Runtime(state=VmState.RUNNING, pid=2**22 + 1, pid_start_time=1))
    res = run_cli(capsys, "--state-dir", str(state), "status", "main-0123abcd")
    assert res.code == 0
    assert "state:     failed (QEMU (pid" in res.out
