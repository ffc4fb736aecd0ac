"""agent-vm's default MCP server: a read-only view of the workspace.

It gives a new VM's agent service something to serve (mcp-proxy will not
start without a server) and shows how servers are declared; replace it or
add others in your --config module (agent-vm.agent.servers).
"""

import os
import subprocess
from pathlib import Path

from mcp.server.fastmcp import FastMCP

WORKSPACE = Path(os.environ.get("AGENT_VM_WORKSPACE", "/workspace"))

server = FastMCP("workspace")


def _git(*args: str) -> str:
    res = subprocess.run(
        ["git", "-C", str(WORKSPACE), *args],
        capture_output=True,
        text=True,
        check=False,
    )
    return res.stdout.strip() if res.returncode == 0 else ""


@server.tool()
def workspace_status() -> dict[str, object]:
    """The workspace's path, branch, commit and uncommitted changes."""
    return {
        "path": str(WORKSPACE),
        "branch": _git("rev-parse", "--abbrev-ref", "HEAD"),
        "commit": _git("rev-parse", "HEAD"),
        "changes": _git("status", "--porcelain").splitlines(),
    }


if __name__ == "__main__":
    server.run()
