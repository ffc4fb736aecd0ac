"""Ready-to-paste MCP client configuration for a VM's agent port
(`agent-vm mcp-config`, and the lines `up` and `status` print)."""

from __future__ import annotations

import json
import shlex

from pydantic import BaseModel

from . import health
from .models import VmConfig

MCP_CONFIG_SCHEMA_VERSION = 1

# The server every guest has unless its configuration disables it
# (modules/agent-service.nix); named when the agent cannot be asked.
DEFAULT_SERVERS = ["workspace"]


class McpServer(BaseModel):
    """One MCP server behind the agent port."""

    name: str
    client_name: str
    url: str
    sse_url: str
    headers: dict[str, str]
    claude_command: str


class McpConfig(BaseModel):
    """`agent-vm mcp-config --json`."""

    schema_version: int = MCP_CONFIG_SCHEMA_VERSION
    vm: str
    servers: list[McpServer]
    servers_from_guest: bool
    mcp_servers: dict[str, dict[str, object]]


def build(cfg: VmConfig, port: int, token: str, servers: list[str] | None) -> McpConfig:
    """The configuration for `servers` as the running guest reported them
    (None: the agent could not be asked, so the default server is assumed)."""
    base = f"http://{health.client_address(cfg.host_address)}:{port}"
    headers = {"Authorization": f"Bearer {token}"}
    rows = []
    for name in servers if servers is not None else DEFAULT_SERVERS:
        client_name = f"{cfg.name}-{name}"
        url = f"{base}/servers/{name}/mcp/"
        rows.append(
            McpServer(
                name=name,
                client_name=client_name,
                url=url,
                sse_url=f"{base}/servers/{name}/sse",
                headers=headers,
                claude_command=shlex.join(
                    [
                        *("claude", "mcp", "add", "--transport", "http", client_name, url),
                        *("--header", f"Authorization: Bearer {token}"),
                    ]
                ),
            )
        )
    return McpConfig(
        vm=cfg.name,
        servers=rows,
        servers_from_guest=servers is not None,
        mcp_servers={
            s.client_name: {"type": "http", "url": s.url, "headers": s.headers} for s in rows
        },
    )


def render(conf: McpConfig) -> str:
    lines = [f"# MCP servers of VM {conf.vm} (the token is a secret: keep it to yourself)"]
    if not conf.servers_from_guest:
        lines.append("# the agent did not list its servers (is the VM running?): the default one")
    if not conf.servers:
        lines.append("# the guest serves no MCP server")
    lines += [s.claude_command for s in conf.servers]
    lines.append("# or, in a client's JSON configuration:")
    lines.append(json.dumps({"mcpServers": conf.mcp_servers}, indent=2))
    return "\n".join(lines)
