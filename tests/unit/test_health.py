"""health: the agent counts as up only when its status endpoint answers 200
to the VM's token, asked with a Host header the guest accepts."""

from __future__ import annotations

import http.server
import json
import socket
import threading
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest
from agent_vm import health

TOKEN = "ab" * 32


class _Handler(http.server.BaseHTTPRequestHandler):
    """Answers like the guest's reverse proxy in front of mcp-proxy."""

    code = 200
    body = b'{"server_instances": {"workspace": "running"}}'
    seen: ClassVar[list[dict[str, Any]]] = []

    def do_GET(self) -> None:
        type(self).seen.append(
            {"path": self.path, "host": self.headers["Host"], "auth": self.headers["Authorization"]}
        )
        authorized = self.headers["Authorization"] == f"Bearer {TOKEN}"
        self.send_response(type(self).code if authorized else 401)
        self.end_headers()
        self.wfile.write(type(self).body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def serve() -> Iterator[Any]:
    servers: list[http.server.HTTPServer] = []

    def start(code: int = 200, body: bytes = _Handler.body) -> tuple[int, list[dict[str, Any]]]:
        handler = type("H", (_Handler,), {"code": code, "body": body, "seen": []})
        srv = http.server.HTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=srv.serve_forever, args=(0.02,), daemon=True).start()
        servers.append(srv)
        return srv.server_address[1], handler.seen

    yield start
    for srv in servers:
        srv.shutdown()
        srv.server_close()


@pytest.mark.parametrize(
    ("code", "healthy"), [(200, True), (204, False), (404, False), (503, False)]
)
def test_agent_health_needs_200_from_the_status_endpoint(
    serve: Any, code: int, healthy: bool
) -> None:
    """A 404 means something else listens there (not mcp-proxy); 503 is a
    proxy that is not ready."""
    port, seen = serve(code)
    assert health.agent_healthy("127.0.0.1", port, TOKEN) is healthy
    assert seen == [{"path": "/status", "host": f"127.0.0.1:{port}", "auth": f"Bearer {TOKEN}"}]


@pytest.mark.parametrize("token", [None, "cd" * 32])
def test_without_the_right_token_the_agent_is_not_healthy(serve: Any, token: str | None) -> None:
    port, seen = serve()
    assert not health.agent_healthy("127.0.0.1", port, token)
    assert seen[0]["auth"] == (f"Bearer {token}" if token else None)


def test_bound_to_every_interface_it_is_asked_on_loopback(serve: Any) -> None:
    """127.0.0.1:<port> is a Host the guest accepts whatever --host is."""
    port, seen = serve()
    assert health.agent_healthy("0.0.0.0", port, TOKEN)
    assert seen[0]["host"] == f"127.0.0.1:{port}"
    assert health.client_address("10.1.2.3") == "10.1.2.3"


def test_the_server_names_come_from_the_status_answer_and_are_checked(serve: Any) -> None:
    """The answer is the guest's: a name that could break a command line or
    a terminal is dropped, and a body that is not the expected JSON gives
    no names (the agent is still up)."""
    instances = {"workspace": "running", "github": "running", "x; rm -rf ~": "running"}
    instances["\x1b[2Jevil"] = "running"
    port, _ = serve(body=json.dumps({"server_instances": instances}).encode())
    assert health.agent_status("127.0.0.1", port, TOKEN) == ["github", "workspace"]
    for body in (b"not json", b"[1, 2]", b'{"server_instances": ["a"]}'):
        port, _ = serve(body=body)
        assert health.agent_status("127.0.0.1", port, TOKEN) == []


def test_a_bare_tcp_accept_is_not_healthy() -> None:
    """QEMU's forward accepts even when nothing listens in the guest."""
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen()

        def accept_and_close() -> None:
            conn, _ = srv.accept()
            conn.close()

        threading.Thread(target=accept_and_close, daemon=True).start()
        assert not health.agent_healthy("127.0.0.1", srv.getsockname()[1], TOKEN, timeout=2)


def test_closed_port_is_not_healthy() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert not health.agent_healthy("127.0.0.1", port, TOKEN, timeout=0.5)
