"""The agent service's pieces for real: mcp-proxy started with the
configuration file and arguments lib/agent.nix generates (as
modules/agent-service.nix does), serving the default workspace server
(modules/agent/workspace_server.py), checked with the CLI's own health
probe and an MCP tool call through the proxy."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from agent_vm import health
from harness import MCP_INIT
from nix_eval import LIB, ROOT, evaluate_file, write_expr

SERVER = ROOT / "modules" / "agent" / "workspace_server.py"

EXPR = r"""
{ libDir, servers, port, configFile }:
let lib = import (/. + libDir) { }; in
{
  config = lib.mcpProxyConfig (builtins.fromJSON servers);
  args = lib.mcpProxyArgs {
    port = builtins.fromJSON port;
    inherit configFile;
  };
}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args],
        check=True,
        capture_output=True,
    )


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    repo = tmp_path / "workspace"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "commit", "-q", "--allow-empty", "-m", "init")
    (repo / "new-file").write_text("x\n")
    return repo


@pytest.fixture
def proxy(tmp_path: Path, workspace: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    binary = shutil.which("mcp-proxy")
    if binary is None:
        pytest.fail("mcp-proxy is missing: ./run-tests installs it with the test extras")
    servers = {
        "workspace": {
            "enable": True,
            "command": sys.executable,
            "args": [str(SERVER)],
            "env": {"AGENT_VM_WORKSPACE": str(workspace)},
        },
        # mcp-proxy exits when a server cannot start: a disabled one must
        # not reach its configuration.
        "broken": {"enable": False, "command": "/nonexistent/server", "args": [], "env": {}},
    }
    port = _free_port()
    config_file = tmp_path / "servers.json"
    gen = evaluate_file(
        write_expr(tmp_path, "agent.nix", EXPR),
        libDir=str(LIB),
        servers=json.dumps(servers),
        port=str(port),
        configFile=str(config_file),
    )
    config_file.write_text(json.dumps(gen["config"]))
    log = (tmp_path / "proxy.log").open("w")
    proc = subprocess.Popen([binary, *gen["args"]], stdout=log, stderr=log, cwd=workspace)
    try:
        deadline = time.monotonic() + 60
        while not health.agent_healthy("127.0.0.1", port, None, timeout=1):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mcp-proxy did not come up:\n{(tmp_path / 'proxy.log').read_text()}")
            time.sleep(0.2)
        yield port, gen
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


def test_generated_arguments(proxy: tuple[int, dict[str, Any]], tmp_path: Path) -> None:
    port, gen = proxy
    assert gen["args"] == [
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--named-server-config",
        str(tmp_path / "servers.json"),
        "--pass-environment",
    ]
    assert list(gen["config"]["mcpServers"]) == ["workspace"]


def test_status_lists_the_enabled_servers(proxy: tuple[int, dict[str, Any]]) -> None:
    port, _ = proxy
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{health.HEALTH_PATH}", timeout=5) as r:
        assert r.status == 200
        status = json.loads(r.read())
    assert list(status["server_instances"]) == ["workspace"]


def _rpc(port: int, body: dict[str, Any], session: str | None = None) -> tuple[Any, str | None]:
    headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
    if session:
        headers["mcp-session-id"] = session
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/servers/workspace/mcp/",
        data=json.dumps(body).encode(),
        headers=headers,
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        raw = r.read()
        sid = r.headers.get("mcp-session-id")
    return (json.loads(raw) if raw.strip() else None), sid


CALL = {
    "jsonrpc": "2.0",
    "id": 3,
    "method": "tools/call",
    "params": {"name": "workspace_status", "arguments": {}},
}


def test_the_workspace_server_answers_through_the_proxy(
    proxy: tuple[int, dict[str, Any]], workspace: Path
) -> None:
    port, _ = proxy
    init, sid = _rpc(port, MCP_INIT)
    assert init["result"]["serverInfo"]["name"] == "workspace" and sid
    _rpc(port, {"jsonrpc": "2.0", "method": "notifications/initialized"}, sid)
    tools, _ = _rpc(port, {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}, sid)
    assert [t["name"] for t in tools["result"]["tools"]] == ["workspace_status"]
    call, _ = _rpc(port, CALL, sid)
    result = call["result"]["structuredContent"]
    assert result["path"] == str(workspace)
    assert result["branch"] == "main" and len(result["commit"]) == 40
    assert result["changes"] == ["?? new-file"]


def test_a_hostile_git_config_in_the_workspace_runs_nothing(
    proxy: tuple[int, dict[str, Any]], workspace: Path, tmp_path: Path
) -> None:
    """The agent owns the workspace's .git/config; the server's user holds
    the MCP secrets. git must not run what that config names."""
    marker = tmp_path / "pwned"
    _git(workspace, "config", "core.fsmonitor", f"touch {marker}; false #")
    _git(workspace, "config", "filter.x.clean", f"touch {marker}; cat")
    (workspace / ".gitattributes").write_text("* filter=x\n")
    _git(workspace, "add", ".gitattributes")  # the index knows it: status checks it
    (workspace / ".gitattributes").write_text("* filter=x\n# changed\n")
    marker.unlink(missing_ok=True)  # `git add` above ran the filter here, on purpose
    port, _ = proxy
    _, sid = _rpc(port, MCP_INIT)
    _rpc(port, {"jsonrpc": "2.0", "method": "notifications/initialized"}, sid)
    call, _ = _rpc(port, CALL, sid)
    result = call["result"]["structuredContent"]
    assert "AM .gitattributes" in result["changes"] and result["branch"] == "main"
    assert not marker.exists()


def _sh(
    script: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", str(script), *args], capture_output=True, text=True, check=False, env=env
    )


AGENT = ROOT / "modules" / "agent"


def test_the_nginx_maps_are_made_from_the_token_and_the_command_line(tmp_path: Path) -> None:
    token = "0123456789abcdef" * 4
    (tmp_path / "token").write_text(token + "\n")
    (tmp_path / "cmdline").write_text(
        "console=ttyS0 root=/dev/vda agent_vm.agent_hosts=127.0.0.1:8123,localhost:8123\n"
    )
    out = tmp_path / "auth.conf"
    env = {"PATH": "/usr/bin:/bin", "AGENT_VM_CMDLINE": str(tmp_path / "cmdline")}
    res = _sh(AGENT / "agent-auth-conf.sh", str(tmp_path / "token"), str(out), env=env)
    assert res.returncode == 0, res.stderr
    text = out.read_text()
    assert f'"Bearer {token}" 1;' in text
    assert '"127.0.0.1:8123" 1;' in text and '"localhost:8123" 1;' in text
    assert text.count("default 0;") == 2  # anything else is refused
    assert oct(out.stat().st_mode & 0o777) == "0o600"
    # Nothing but what the host sends ends up in nginx's configuration.
    for bad_token in ("A" * 64, "0" * 63, '0" 1; } map $x $y { "' + "0" * 40):
        (tmp_path / "token").write_text(bad_token)
        res = _sh(AGENT / "agent-auth-conf.sh", str(tmp_path / "token"), str(out), env=env)
        assert res.returncode == 1 and "agent token" in res.stderr
    (tmp_path / "token").write_text(token)
    (tmp_path / "cmdline").write_text('agent_vm.agent_hosts=evil";}\n')
    res = _sh(AGENT / "agent-auth-conf.sh", str(tmp_path / "token"), str(out), env=env)
    assert res.returncode == 1 and "bad host" in res.stderr
    (tmp_path / "cmdline").write_text("root=/dev/vda\n")
    res = _sh(AGENT / "agent-auth-conf.sh", str(tmp_path / "token"), str(out), env=env)
    assert res.returncode == 1 and "agent_vm.agent_hosts" in res.stderr


def test_the_secrets_file_becomes_environment_without_being_evaluated(tmp_path: Path) -> None:
    env_file = tmp_path / "mcp.env"
    env_file.write_text('# comment\n\nVALUE=a b $(touch pwned) `x` "q"\nEMPTY=\nLAST=no-newline')
    res = subprocess.run(
        ["sh", str(AGENT / "with-env-file.sh"), str(env_file), "env"],
        capture_output=True, text=True, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    got = dict(line.split("=", 1) for line in res.stdout.splitlines() if "=" in line)
    assert got["VALUE"] == 'a b $(touch pwned) `x` "q"'
    assert got["EMPTY"] == "" and got["LAST"] == "no-newline"
    assert not (tmp_path / "pwned").exists()
    # Without the file (no secrets given) the command simply runs.
    assert _sh(AGENT / "with-env-file.sh", str(tmp_path / "none"), "true").returncode == 0
    env_file.write_text("OK=1\nexport SECRET=s3cret\n")
    res = _sh(AGENT / "with-env-file.sh", str(env_file), "true")
    assert res.returncode == 1 and "line 2: expected NAME=value" in res.stderr
    assert "s3cret" not in res.stderr
