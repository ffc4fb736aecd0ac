"""mcp-config: the client configuration a user pastes, with the VM's token,
for the servers the running guest reports (its default one otherwise)."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
from agent_vm import agent_secrets, commands, health, mcp_config
from agent_vm.paths import StateLayout
from unit_fakes import run_cli, vm_config, write_vm

TOKEN = "0f" * 32


def test_one_server_per_name_with_the_token_header() -> None:
    conf = mcp_config.build(vm_config(), 8123, TOKEN, ["github", "workspace"])
    assert conf.servers_from_guest
    gh = conf.servers[0]
    assert gh.client_name == "main-0123abcd-github"
    assert gh.url == "http://127.0.0.1:8123/servers/github/mcp/"
    assert gh.sse_url == "http://127.0.0.1:8123/servers/github/sse"
    assert shlex.split(gh.claude_command) == [
        *("claude", "mcp", "add", "--transport", "http", "main-0123abcd-github"),
        "http://127.0.0.1:8123/servers/github/mcp/",
        *("--header", f"Authorization: Bearer {TOKEN}"),
    ]
    assert conf.mcp_servers["main-0123abcd-workspace"] == {
        "type": "http",
        "url": "http://127.0.0.1:8123/servers/workspace/mcp/",
        "headers": {"Authorization": f"Bearer {TOKEN}"},
    }


def test_a_vm_that_is_not_running_shows_its_default_server() -> None:
    conf = mcp_config.build(vm_config(host_address="0.0.0.0"), 8000, TOKEN, None)
    assert not conf.servers_from_guest
    assert "the agent did not list its servers" in mcp_config.render(conf)
    assert [s.name for s in conf.servers] == ["workspace"]
    # Bound to every interface, loopback is the address a client uses.
    assert conf.servers[0].url == "http://127.0.0.1:8000/servers/workspace/mcp/"


def test_the_text_is_ready_to_paste() -> None:
    text = mcp_config.render(mcp_config.build(vm_config(), 8000, TOKEN, ["workspace"]))
    lines = text.splitlines()
    assert lines[1].startswith("claude mcp add --transport http main-0123abcd-workspace ")
    assert lines[1].endswith(f"--header 'Authorization: Bearer {TOKEN}'")
    snippet = json.loads(text.split("# or, in a client's JSON configuration:\n", 1)[1])
    assert snippet["mcpServers"]["main-0123abcd-workspace"]["headers"] == {
        "Authorization": f"Bearer {TOKEN}"
    }
    empty = mcp_config.render(mcp_config.build(vm_config(), 8000, TOKEN, []))
    assert "# the guest serves no MCP server" in empty


def test_the_verb_prints_the_vm_s_own_token(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    layout = StateLayout(tmp_path / "state")
    vm = write_vm(layout, vm_config())
    token = agent_secrets.prepare(vm)
    res = run_cli(capsys, "--state-dir", str(layout.root), "mcp-config", vm.name, "--json")
    assert res.code == 0, res.err
    out = json.loads(res.out)
    assert out["vm"] == vm.name and not out["servers_from_guest"]
    assert out["servers"][0]["headers"] == {"Authorization": f"Bearer {token}"}
    text = run_cli(capsys, "--state-dir", str(layout.root), "mcp-config", vm.name)
    assert text.code == 0 and f"Bearer {token}" in text.out


def test_a_vm_without_a_token_says_how_to_get_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    layout = StateLayout(tmp_path / "state")
    vm = write_vm(layout, vm_config())
    res = run_cli(capsys, "--state-dir", str(layout.root), "mcp-config", vm.name)
    assert res.code == 3
    assert res.err.splitlines() == [
        f"agent-vm: error: VM {vm.name} has no agent token yet",
        "agent-vm: hint: 'agent-vm start' makes one",
    ]


def test_the_connect_help_asks_the_running_agent_for_its_servers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    layout = StateLayout(tmp_path / "state")
    vm = write_vm(layout, vm_config())
    token = agent_secrets.prepare(vm)
    asked: list[tuple[str, int, str | None]] = []

    def status(address: str, port: int, t: str | None) -> list[str]:
        asked.append((address, port, t))
        return ["fetch", "workspace"]

    monkeypatch.setattr(health, "agent_status", status)
    text = commands._connect_help(vm, vm_config())
    assert asked == [("127.0.0.1", 8000, token)]
    assert "claude mcp add --transport http main-0123abcd-fetch" in text
    assert "claude mcp add --transport http main-0123abcd-workspace" in text
