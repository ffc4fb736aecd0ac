"""The VM's secrets that reach its guest: the agent port's bearer token and
the MCP servers' environment file.

Both live in `<vm>/secrets/` (0700, files 0600) on the host and travel to
the guest only at boot, as fw_cfg systemd credentials (lib/qemu-args.nix):
never in params.json, the Nix store or the guest's disk. In the guest the
token is read by root only (the reverse proxy's configuration) and the
environment file only by the MCP servers' own unit, which runs as a user
other than the agent's (docs/threat-model.md).
"""

from __future__ import annotations

import re
import secrets
from pathlib import Path

from .errors import CorruptState, InvalidInput
from .fsutil import atomic_write, ensure_private_dir
from .paths import VmPaths

# 256 bits, lowercase hex: the guest's nginx compares it in a `map`, whose
# string matching ignores case, so mixed-case tokens would lose entropy.
TOKEN_BYTES = 32
_TOKEN = re.compile(r"[0-9a-f]{64}")

# What systemd's EnvironmentFile= and the guest's loader agree on: a name,
# '=', the rest of the line taken literally (no quotes, no expansion).
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
MAX_ENV_BYTES = 64 * 1024


def prepare(vm: VmPaths) -> str:
    """Make what a boot needs: the token (a VM made before tokens existed
    gets one now) and an empty environment file unless one was set. Returns
    the token."""
    ensure_private_dir(vm.secrets_dir)
    if not vm.mcp_secrets.exists():
        atomic_write(vm.mcp_secrets, "")
    token = read_token(vm)
    if token is None:
        token = secrets.token_hex(TOKEN_BYTES)
        atomic_write(vm.agent_token, token + "\n")
    return token


def read_token(vm: VmPaths) -> str | None:
    """The VM's token, or None when it has none yet (made by its next start)."""
    try:
        text = vm.agent_token.read_text().strip()
    except FileNotFoundError:
        return None
    if not _TOKEN.fullmatch(text):
        raise CorruptState(
            f"{vm.agent_token} is not an agent-vm token",
            hint="delete it; the VM's next start makes a new one",
        )
    return text


def check_env(text: str, source: str) -> None:
    """Refuse what the guest could not load, naming the line, never its value."""
    if len(text.encode()) > MAX_ENV_BYTES:
        raise InvalidInput(f"{source} is larger than {MAX_ENV_BYTES} bytes")
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        name, eq, _ = line.partition("=")
        if not eq or not _ENV_NAME.fullmatch(name):
            raise InvalidInput(
                f"{source} line {number}: expected NAME=value",
                hint="one variable a line, no quotes, no 'export'; # starts a comment",
            )


def read_env_file(path: Path) -> str:
    """The content of the user's `--mcp-env` file, checked."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"--mcp-env {path}: cannot read it ({exc})") from None
    check_env(text, f"--mcp-env {path}")
    return text


def set_mcp_secrets(vm: VmPaths, text: str) -> bool:
    """Store the servers' environment for the next boot; True if it changed."""
    ensure_private_dir(vm.secrets_dir)
    try:
        if vm.mcp_secrets.read_text() == text:
            return False
    except FileNotFoundError:
        pass
    atomic_write(vm.mcp_secrets, text)
    return True
