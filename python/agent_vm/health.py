"""Is the agent service answering on its forwarded port?"""

from __future__ import annotations

import http.client

HEALTH_PATH = "/"


def agent_healthy(host: str, port: int, timeout: float = 2.0) -> bool:
    """An HTTP answer below 500 counts; a bare TCP accept does not.

    Like SSH, the forward accepts connections even when nothing listens in
    the guest, so only a real HTTP response proves the service is up.
    """
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", HEALTH_PATH)
        return conn.getresponse().status < 500
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()
