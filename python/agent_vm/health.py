"""Is the agent service answering on its forwarded port?"""

from __future__ import annotations

import http.client
import json
import re

# mcp-proxy's status endpoint (lib/agent.nix healthPath): 200 once every
# configured MCP server has started.
HEALTH_PATH = "/status"

# A server name as it may appear in a URL path and a client's config. The
# names come from the guest (hostile): anything else is dropped.
SERVER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
MAX_STATUS_BYTES = 64 * 1024


def client_address(host_address: str) -> str:
    """Where a client on the host reaches a port bound to `host_address`.

    Bound to every interface, loopback reaches it, and 127.0.0.1 is a Host
    the guest accepts (lib/agent.nix agentHosts)."""
    return "127.0.0.1" if host_address == "0.0.0.0" else host_address


def agent_status(
    host_address: str, port: int, token: str | None, timeout: float = 2.0
) -> list[str] | None:
    """The names of the MCP servers the agent serves, or None unless its
    status endpoint answered 200 to our token.

    Like SSH, the forward accepts connections even when nothing listens in
    the guest, so only a real HTTP response proves the service is up. The
    Host header is the address connected to, one the guest's reverse proxy
    accepts; without the token it answers 401.
    """
    conn = http.client.HTTPConnection(client_address(host_address), port, timeout=timeout)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        conn.request("GET", HEALTH_PATH, headers=headers)
        resp = conn.getresponse()
        if resp.status != 200:
            return None
        body = resp.read(MAX_STATUS_BYTES)
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()
    return _server_names(body)


def _server_names(body: bytes) -> list[str]:
    try:
        instances = json.loads(body).get("server_instances", {})
    except (ValueError, AttributeError):
        return []
    if not isinstance(instances, dict):
        return []
    return sorted(n for n in instances if isinstance(n, str) and SERVER_NAME.fullmatch(n))


def agent_healthy(host_address: str, port: int, token: str | None, timeout: float = 2.0) -> bool:
    """Only a 200 from the status endpoint counts; a bare TCP accept does not."""
    return agent_status(host_address, port, token, timeout) is not None
