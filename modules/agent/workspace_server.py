"""agent-vm's default MCP server: a read-only view of the workspace.

It gives a new VM's agent service something to serve (mcp-proxy will not
start without a server) and shows how servers are declared; replace it or
add others in your --config module (agent-vm.agent.servers).

The workspace is the agent's: its `.git/config` could name a command for
git to run (core.fsmonitor, a clean filter) as this server's user, which
holds the VM's MCP secrets. So git runs with a private git directory whose
configuration is ours, reading the workspace's HEAD, refs, objects and index
as data, and with no system or global configuration.
"""

import os
import subprocess
import tempfile
from pathlib import Path

from mcp.server.fastmcp import FastMCP

WORKSPACE = Path(os.environ.get("AGENT_VM_WORKSPACE", "/workspace"))

server = FastMCP("workspace")


def _git(*args: str) -> str:
    dot_git = WORKSPACE / ".git"
    if dot_git.is_symlink() or not dot_git.is_dir() or (dot_git / "HEAD").is_symlink():
        return ""  # a worktree link, no repository, or HEAD pointing elsewhere
    with tempfile.TemporaryDirectory(prefix="agent-vm-git-") as private:
        git_dir = Path(private)
        (git_dir / "config").write_text("[core]\n\trepositoryformatversion = 0\n\tbare = false\n")
        try:
            (git_dir / "HEAD").write_bytes((dot_git / "HEAD").read_bytes()[:4096])
        except OSError:
            return ""
        for name in ("refs", "packed-refs", "objects", "info"):
            (git_dir / name).symlink_to(dot_git / name)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": private,
            "GIT_DIR": str(git_dir),
            "GIT_WORK_TREE": str(WORKSPACE),
            "GIT_INDEX_FILE": str(dot_git / "index"),
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": os.devnull,
            # The workspace belongs to the agent's user, not this one.
            "GIT_CONFIG_COUNT": "1",
            "GIT_CONFIG_KEY_0": "safe.directory",
            "GIT_CONFIG_VALUE_0": str(WORKSPACE),
        }
        res = subprocess.run(
            ["git", "--no-optional-locks", *args],
            capture_output=True,
            text=True,
            check=False,
            env=env,
            cwd=WORKSPACE,
        )
    return res.stdout.strip() if res.returncode == 0 else ""


@server.tool()
def workspace_status() -> dict[str, object]:
    """The workspace's path, branch, commit and uncommitted changes."""
    return {
        "path": str(WORKSPACE),
        "branch": _git("rev-parse", "--abbrev-ref", "HEAD"),
        "commit": _git("rev-parse", "HEAD"),
        "changes": _git("status", "--porcelain", "--ignore-submodules=all").splitlines(),
    }


if __name__ == "__main__":
    server.run()
