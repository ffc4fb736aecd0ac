"""Test guest only: a stdio MCP server that reports the E2E_* variables it
was started with, so the end-to-end tests see that the VM's MCP secrets
reach the servers (and, separately, that the guest user cannot read them).

No MCP SDK: importing it costs the test guest's emulated CPU most of a
minute at every boot, and this server only answers three requests.
"""

import json
import os
import sys

TOOL = {
    "name": "e2e_environment",
    "description": "The server's E2E_* environment variables.",
    "inputSchema": {"type": "object", "properties": {}},
}


def answer(request: dict) -> dict | None:
    method = request.get("method")
    if "id" not in request:
        return None  # a notification
    if method == "initialize":
        result = {
            "protocolVersion": request["params"]["protocolVersion"],
            "capabilities": {"tools": {}},
            "serverInfo": {"name": "e2e-env", "version": "1"},
        }
    elif method == "tools/list":
        result = {"tools": [TOOL]}
    elif method == "tools/call":
        env = {k: v for k, v in os.environ.items() if k.startswith("E2E_")}
        result = {
            "content": [{"type": "text", "text": json.dumps(env)}],
            "structuredContent": env,
        }
    elif method == "ping":
        result = {}
    else:
        return {
            "jsonrpc": "2.0",
            "id": request["id"],
            "error": {"code": -32601, "message": f"no method {method}"},
        }
    return {"jsonrpc": "2.0", "id": request["id"], "result": result}


for line in sys.stdin:
    if line.strip():
        reply = answer(json.loads(line))
        if reply is not None:
            sys.stdout.write(json.dumps(reply) + "\n")
            sys.stdout.flush()
