"""health: the agent counts as up only when its status endpoint answers 200."""

from __future__ import annotations

import http.server
import socket
import threading
from typing import ClassVar

import pytest
from agent_vm import health


class _Handler(http.server.BaseHTTPRequestHandler):
    code = 200
    paths: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        type(self).paths.append(self.path)
        self.send_response(type(self).code)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.parametrize(
    ("code", "healthy"), [(200, True), (204, False), (404, False), (503, False)]
)
def test_agent_health_needs_200_from_the_status_endpoint(code: int, healthy: bool) -> None:
    """A 404 means something else listens there (not mcp-proxy); 503 is a
    proxy that is not ready."""
    handler = type("H", (_Handler,), {"code": code, "paths": []})
    srv = http.server.HTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=srv.serve_forever, args=(0.02,), daemon=True)
    t.start()
    try:
        assert health.agent_healthy("127.0.0.1", srv.server_address[1]) is healthy
        assert handler.paths == ["/status"]
    finally:
        srv.shutdown()
        srv.server_close()


def test_a_bare_tcp_accept_is_not_healthy() -> None:
    """QEMU's forward accepts even when nothing listens in the guest."""
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen()

        def accept_and_close() -> None:
            conn, _ = srv.accept()
            conn.close()

        threading.Thread(target=accept_and_close, daemon=True).start()
        assert not health.agent_healthy("127.0.0.1", srv.getsockname()[1], timeout=2)


def test_closed_port_is_not_healthy() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert not health.agent_healthy("127.0.0.1", port, timeout=0.5)
