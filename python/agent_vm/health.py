"""Is the agent service answering on its forwarded port?"""

from __future__ import annotations

import http.client

# mcp-proxy's status endpoint (lib/agent.nix healthPath): 200 once every
# configured MCP server has started.
HEALTH_PATH = "/status"


def agent_healthy(host: str, port: int, timeout: float = 2.0) -> bool:
    """Only a 200 from the status endpoint counts; a bare TCP accept does not.

    Like SSH, the forward accepts connections even when nothing listens in
    the guest, so only a real HTTP response proves the service is up.
    """
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", HEALTH_PATH)
        return conn.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()
