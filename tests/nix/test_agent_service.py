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
    # On the test host stay on loopback (in the guest it is 0.0.0.0).
    extraArgs = [ "--host" "127.0.0.1" ];
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
        while not health.agent_healthy("127.0.0.1", port, timeout=1):
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
        "0.0.0.0",
        "--port",
        str(port),
        "--named-server-config",
        str(tmp_path / "servers.json"),
        "--pass-environment",
        "--host",
        "127.0.0.1",
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


def test_the_workspace_server_answers_through_the_proxy(
    proxy: tuple[int, dict[str, Any]], workspace: Path
) -> None:
    port, _ = proxy
    init, sid = _rpc(
        port,
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-03-26",
                "capabilities": {},
                "clientInfo": {"name": "agent-vm-tests", "version": "1"},
            },
        },
    )
    assert init["result"]["serverInfo"]["name"] == "workspace" and sid
    _rpc(port, {"jsonrpc": "2.0", "method": "notifications/initialized"}, sid)
    tools, _ = _rpc(port, {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}, sid)
    assert [t["name"] for t in tools["result"]["tools"]] == ["workspace_status"]
    call, _ = _rpc(
        port,
        {
            "jsonrpc": "2.0",
            "id": 3,
            "method": "tools/call",
            "params": {"name": "workspace_status", "arguments": {}},
        },
        sid,
    )
    result = call["result"]["structuredContent"]
    assert result["path"] == str(workspace)
    assert result["branch"] == "main" and len(result["commit"]) == 40
    assert result["changes"] == ["?? new-file"]
