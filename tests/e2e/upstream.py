"""Upstream servers for the egress tests, on the host's loopback only: one
plain HTTP and one HTTPS (a certificate from a CA made for the test run),
both answering with the request headers they got and remembering them, so
a test can see what really arrived. The proxy reaches them through its
test-only name mapping (AGENT_VM_EGRESS_TEST_HOSTS); nothing here talks to
any other address."""

from __future__ import annotations

import http.server
import json
import os
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

# Names the tests use, and which server each maps to.
HTTP_NAMES = ("plain.test", "other.test", "evil.test")
HTTPS_NAMES = ("secret.test", "passthru.test")

# What both egress tests do and expect to find in the decision log:
# (method, host, decision).
EXPECTED_DECISIONS = {
    ("GET", "plain.test", "allowed"),
    ("GET", "evil.test", "denied"),
    ("CONNECT", "evil.test", "denied"),
    ("GET", "secret.test", "injected"),
    ("GET", "other.test", "denied"),
    ("CONNECT", "passthru.test", "allowed"),
}


def make_ca(d: Path) -> tuple[Path, Path, Path]:
    """A test CA and a server certificate for the HTTPS names: (ca, cert, key)."""
    d.mkdir(parents=True, exist_ok=True)
    ca_key, ca, key, csr, cert = (
        d / n for n in ("ca.key", "ca.pem", "srv.key", "srv.csr", "srv.pem")
    )
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    run = lambda *a: subprocess.run(["openssl", *a], check=True, capture_output=True)  # noqa: E731
    run(
        "req",
        "-x509",
        *ec,
        "-keyout",
        str(ca_key),
        "-out",
        str(ca),
        "-days",
        "2",
        "-subj",
        "/CN=agent-vm egress test CA",
    )
    run("req", *ec, "-keyout", str(key), "-out", str(csr), "-subj", "/CN=secret.test")
    ext = d / "san.ext"
    ext.write_text("subjectAltName=" + ",".join(f"DNS:{n}" for n in HTTPS_NAMES) + "\n")
    run(
        "x509",
        "-req",
        "-in",
        str(csr),
        "-CA",
        str(ca),
        "-CAkey",
        str(ca_key),
        "-CAcreateserial",
        "-out",
        str(cert),
        "-days",
        "2",
        "-extfile",
        str(ext),
    )
    return ca, cert, key


@dataclass
class Upstream:
    http_port: int
    https_port: int
    ca: Path
    seen: list[dict[str, str]] = field(default_factory=list)

    def mapping(self) -> str:
        ports = {n: self.http_port for n in HTTP_NAMES} | {n: self.https_port for n in HTTPS_NAMES}
        return json.dumps(ports)

    def trust_store(self, directory: Path) -> Path:
        """The host's store plus the test CA: what the proxy verifies with."""
        bundle = directory / "host-trust.pem"
        system = Path("/etc/ssl/certs/ca-certificates.crt")
        bundle.write_bytes((system.read_bytes() if system.exists() else b"") + self.ca.read_bytes())
        os.chmod(bundle, 0o644)
        return bundle


def _handler(seen: list[dict[str, str]]) -> type[http.server.BaseHTTPRequestHandler]:
    class Echo(http.server.BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            record = {k.lower(): v for k, v in self.headers.items()}
            record[":path"] = self.path
            record[":body"] = body.decode(errors="replace")
            seen.append(record)
            out = json.dumps(record).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        do_GET = do_POST = _answer

        def log_message(self, *args: object) -> None:
            pass

    return Echo


@contextmanager
def upstream(directory: Path) -> Iterator[Upstream]:
    ca, cert, key = make_ca(directory)
    seen: list[dict[str, str]] = []
    plain = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(seen))
    tls = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(seen))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    tls.socket = ctx.wrap_socket(tls.socket, server_side=True)
    for s in (plain, tls):
        threading.Thread(target=s.serve_forever, daemon=True).start()
    try:
        yield Upstream(plain.server_address[1], tls.server_address[1], ca, seen)
    finally:
        for s in (plain, tls):
            s.shutdown()
            s.server_close()


def listening_ports(pid: int) -> list[int]:
    """The TCP ports process `pid` listens on (from /proc; needs to be its
    owner or root)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        f = line.split()
        if f[3] == "0A" and f[9] in inodes:
            ports.append(int(f[1].split(":")[1], 16))
    return ports


def raw_exchange(sock: socket.socket, request: bytes, timeout: float = 10) -> bytes:
    """Send `request`, read until the peer closes or goes quiet."""
    sock.settimeout(timeout)
    sock.sendall(request)
    out = b""
    try:
        while chunk := sock.recv(65536):
            out += chunk
            if b"\r\n\r\n" in out and _complete(out):
                break
    except (TimeoutError, ConnectionResetError):
        pass  # quiet, or cut off: what came is the answer
    return out


def _complete(data: bytes) -> bool:
    head, _, body = data.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(body) >= int(line.split(b":")[1])
    return False
