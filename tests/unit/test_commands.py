"""commands: `up` on an existing VM makes it match the settings given on
the command line (how the NixOS host module applies a changed declaration),
and only those: defaults are not settings, unpinned ports are not either."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest
from agent_vm import cli, commands, lifecycle, store
from agent_vm.context import Context
from agent_vm.errors import InvalidInput
from agent_vm.lifecycle import CreateOptions
from agent_vm.models import VmConfig
from agent_vm.paths import StateLayout, VmPaths
from unit_fakes import make_repo, run_cli


@pytest.fixture
def ctx(tmp_path: Path) -> Context:
    repo = make_repo(tmp_path / "repo")
    return Context(layout=StateLayout(tmp_path / "state"), cwd=repo)


@pytest.fixture
def vm(ctx: Context) -> VmPaths:
    cfg = lifecycle.create(ctx, CreateOptions())
    return ctx.layout.vm(cfg.name)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def apply(ctx: Context, vm: VmPaths, *argv: str) -> VmConfig:
    commands._apply_settings(ctx, vm, cli.build_parser().parse_args(["up", *argv]))
    return store.load_config(vm)


def updates(vm: VmPaths) -> list[dict[str, Any]]:
    lines = vm.events_log.read_text().splitlines() if vm.events_log.exists() else []
    return [e for e in map(json.loads, lines) if e["kind"] == "vm.updated"]


def test_given_settings_are_applied(ctx: Context, vm: VmPaths, tmp_path: Path) -> None:
    module = tmp_path / "guest.nix"
    module.write_text("{ ... }: { }\n")
    ssh, agent = free_port(), free_port()
    cfg = apply(
        ctx,
        vm,
        *("--memory", "4096", "--cores", "3", "--disk-size", "20480", "--network", "none"),
        *("--ephemeral", "--config", str(module)),
        *("--pin", "--ssh-port", str(ssh), "--port", str(agent)),
    )
    assert (cfg.memory_mib, cfg.cores, cfg.disk_size_mib, cfg.network) == (4096, 3, 20480, "none")
    assert cfg.ephemeral and cfg.user_module == str(module)
    assert (cfg.ssh_port, cfg.agent_port) == (ssh, agent)
    assert cfg.ssh_port_pinned and cfg.agent_port_pinned
    assert len(updates(vm)) == 1


def test_the_same_settings_again_change_nothing(ctx: Context, vm: VmPaths) -> None:
    before = store.load_config(vm)
    after = apply(ctx, vm, "--memory", str(before.memory_mib), "--no-ephemeral")
    assert after == before
    assert apply(ctx, vm) == before  # no options: argparse defaults are not settings
    assert updates(vm) == []


def test_an_unpinned_port_is_only_where_a_search_started(ctx: Context, vm: VmPaths) -> None:
    before = store.load_config(vm)
    after = apply(ctx, vm, "--port", str(free_port()), "--ssh-port", str(free_port()))
    assert (after.agent_port, after.ssh_port) == (before.agent_port, before.ssh_port)


def test_the_workspace_cannot_change(ctx: Context, vm: VmPaths, tmp_path: Path) -> None:
    other = tmp_path / "elsewhere"
    other.mkdir()
    with pytest.raises(InvalidInput, match="the workspace cannot change"):
        apply(ctx, vm, "--workspace", str(other))
    # Naming the one it has is fine.
    apply(ctx, vm, "--workspace", store.load_config(vm).workspace)


def test_a_config_module_that_is_not_a_file_is_refused(ctx: Context, vm: VmPaths) -> None:
    with pytest.raises(InvalidInput, match=r"--config .* is not a file"):
        apply(ctx, vm, "--config", "/nonexistent/guest.nix")


def test_logs_previous_shows_the_boot_before(
    ctx: Context, vm: VmPaths, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ("--state-dir", str(ctx.layout.root), "logs", vm.name, "--previous")
    assert run_cli(capsys, *argv).out == f"VM {vm.name} has no previous boot's logs\n"
    (vm.dir / "serial.log.1").write_text("Linux version 6\nreboot: Power down\n")
    (vm.dir / "runner.log.1").write_text("qemu: terminating on signal 15\n")
    vm.serial_log.write_text("this boot\n")
    res = run_cli(capsys, *argv)
    assert res.code == 0
    assert res.out == (
        f"--- previous boot's serial log ({vm.dir / 'serial.log.1'}) ---\n"
        "Linux version 6\nreboot: Power down\n"
        f"--- previous boot's runner log ({vm.dir / 'runner.log.1'}) ---\n"
        "qemu: terminating on signal 15\n"
    )
