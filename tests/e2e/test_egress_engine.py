"""The egress proxy's engine, for real, without a VM: `agent-vm-egress`
(mitmproxy and our addon) started the way the runner starts it, spoken to
through its unix socket the way QEMU's relay does, in front of upstream
servers on the host's loopback. The VM around it is test_egress_vm.py's.

Also the hazard of a proxy that injects real secrets: no other local user,
and no other process, can get a request through it."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from agent_vm.egress import setup
from agent_vm.egress.layout import EgressPaths
from agent_vm.fsutil import connect_unix
from agent_vm.models import VmConfig
from harness import Cli, Unprivileged, make_repo
from upstream import EXPECTED_DECISIONS, Upstream, listening_ports, raw_exchange, upstream

VALUE = "sk-egress-test-0123456789"
PLACEHOLDER = "agent-vm-placeholder-API_KEY"


@dataclass
class Engine:
    vm: str
    vm_dir: Path
    parent: subprocess.Popen[bytes]
    up: Upstream
    mitm_ca: Path

    @property
    def paths(self) -> EgressPaths:
        return EgressPaths(self.vm_dir)

    @property
    def pid(self) -> int:
        return int(json.loads(self.paths.engine_runtime.read_text())["pid"])

    def log(self) -> list[dict[str, object]]:
        return [json.loads(x) for x in self.paths.log.read_text().splitlines()]


class _Relay(http.client.HTTPConnection):
    """What QEMU's relay does: the connection goes to the engine's socket."""

    def __init__(self, sock: Path) -> None:
        super().__init__("10.0.2.100", 3128, timeout=20)
        self._path = sock

    def connect(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        connect_unix(s, self._path)
        self.sock = s


class _RelayTLS(http.client.HTTPSConnection):
    def __init__(self, sock: Path, ca: Path) -> None:
        super().__init__(
            "10.0.2.100", 3128, timeout=20, context=ssl.create_default_context(cafile=ca)
        )
        self._path = sock

    def connect(self) -> None:
        _Relay.connect(self)  # type: ignore[arg-type]
        self._tunnel()  # type: ignore[attr-defined]
        self.sock = self._context.wrap_socket(self.sock, server_hostname=self._tunnel_host)  # type: ignore[attr-defined]


def get(
    e: Engine, url: str, headers: dict[str, str] | None = None, ca: Path | None = None
) -> tuple[int, bytes]:
    scheme, _, rest = url.partition("://")
    host = rest.split("/", 1)[0]
    if scheme == "https":
        conn: http.client.HTTPConnection = _RelayTLS(e.paths.socket, ca or e.mitm_ca)
        conn.set_tunnel(host, 443)
        conn.request("GET", "/" + rest.split("/", 1)[1], headers=headers or {})
    else:
        conn = _Relay(e.paths.socket)
        conn.request("GET", url, headers=headers or {})
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    return resp.status, body


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory every user can traverse: the state dir inside it is then
    guarded by agent-vm's own 0700 directories alone."""
    d = Path(tempfile.mkdtemp(prefix="agent-vm-egress-"))
    os.chmod(d, 0o755)  # noqa: S103 - the point: only the state dir's own modes guard it
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def engine(cli: Cli, tmp_path: Path, open_dir: Path) -> Iterator[Engine]:
    cli.state_dir = open_dir / "state"
    repo = make_repo(tmp_path / "repo")
    vm = cli(
        "create",
        "--allow",
        "plain.test",
        "--allow",
        "other.test",
        "--allow",
        "passthru.test",
        "--json",
        cwd=repo,
    ).json()["name"]
    cli.env["HOST_API_KEY"] = VALUE
    cli(
        "secret",
        "add",
        "API_KEY",
        "--domain",
        "secret.test",
        "--header",
        "x-api-key",
        "--from-env",
        "HOST_API_KEY",
        cwd=repo,
    )
    del cli.env["HOST_API_KEY"]
    vm_dir = cli.state_dir / "vms" / vm
    cfg = VmConfig.model_validate_json((vm_dir / "vm.json").read_text())
    setup.prepare(vm_dir, cfg, cli.state_dir)  # what `start` does before the runner
    with upstream(tmp_path / "upstream") as up:
        env = dict(os.environ) | {
            "AGENT_VM_EGRESS_TEST_HOSTS": up.mapping(),
            "SSL_CERT_FILE": str(up.trust_store(tmp_path)),
        }
        engine_bin = cli.env["AGENT_VM_TEST_EGRESS_ENGINE"]
        # As the runner: the engine in the background of a shell that stays
        # its parent (QEMU, after the runner's exec).
        parent = subprocess.Popen(
            [
                "sh",
                "-c",
                '"$1" "$2" >>"$2/egress/engine.log" 2>&1 & wait',
                "sh",
                engine_bin,
                str(vm_dir),
            ],
            env=env,
            start_new_session=True,
        )
        paths = EgressPaths(vm_dir)
        deadline = time.monotonic() + 60
        while not (paths.socket.exists() and paths.engine_runtime.exists()):
            assert time.monotonic() < deadline, paths.engine_log.read_text()
            time.sleep(0.1)
        try:
            yield Engine(vm, vm_dir, parent, up, paths.ca_cert)
        finally:
            with_suppressed_kill(parent)


def with_suppressed_kill(p: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(p.pid, signal.SIGKILL)
    p.wait()


def test_decisions_injection_and_the_log(engine: Engine, cli: Cli, tmp_path: Path) -> None:
    e = engine
    # An allowed name answers.
    status, _ = get(e, "http://plain.test/hello")
    assert status == 200 and e.up.seen[-1][":path"] == "/hello"

    # An unlisted name: 403, saying which VM, which host, and the command.
    status, body = get(e, "http://evil.test/x")
    page = body.decode()
    assert status == 403, page
    assert f"VM {e.vm} refused GET evil.test:80" in page
    command = next(ln.strip() for ln in page.splitlines() if ln.strip().startswith("agent-vm "))
    assert command == f"agent-vm --state-dir {cli.state_dir} update {e.vm} --add-allow evil.test"

    # A denied CONNECT is answered the same way, before any tunnel.
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    connect_unix(s, e.paths.socket)
    answer = raw_exchange(s, b"CONNECT evil.test:443 HTTP/1.1\r\nHost: evil.test:443\r\n\r\n")
    s.close()
    assert answer.startswith(b"HTTP/1.1 403"), answer
    assert f"VM {e.vm} refused CONNECT evil.test:443".encode() in answer

    # The command from the page allows it, at once (the proxy reloads).
    assert not any(x[":path"] == "/x" for x in e.up.seen)
    subprocess.run(
        [cli.binary, *command.split()[1:]],
        env=dict(os.environ) | cli.env,
        check=True,
        capture_output=True,
    )
    assert get(e, "http://evil.test/x")[0] == 200 and e.up.seen[-1][":path"] == "/x"

    # The placeholder reaches the secret's domain as the secret; the
    # header is set; what the upstream echoes back is scrubbed.
    status, body = get(e, "https://secret.test/api", {"Authorization": f"Bearer {PLACEHOLDER}"})
    assert status == 200
    seen = e.up.seen[-1]
    assert seen["authorization"] == f"Bearer {VALUE}" and seen["x-api-key"] == VALUE
    assert VALUE.encode() not in body and PLACEHOLDER.encode() in body

    # The placeholder to a host that is not the secret's: refused, never sent.
    n = len(e.up.seen)
    status, body = get(e, "http://other.test/", {"Authorization": f"Bearer {PLACEHOLDER}"})
    assert status == 403 and b"placeholder of secret API_KEY" in body
    assert len(e.up.seen) == n
    # Nor over plain HTTP to its own domain.
    assert get(e, "http://secret.test/")[0] == 403

    # Without a secret, TLS is not terminated: the guest sees the upstream's
    # own certificate (trusting only the test CA works; the proxy's CA is
    # never presented).
    status, body = get(e, "https://passthru.test/p", ca=e.up.ca)
    assert status == 200 and json.loads(body)[":path"] == "/p"

    # Every decision is in the log, and the secret in none of it.
    deadline = time.monotonic() + 10
    while sum(1 for x in e.log() if x["method"] == "CONNECT") < 3 and time.monotonic() < deadline:
        time.sleep(0.1)  # tunnels are logged when they close
    log = e.log()
    decisions = {(x["method"], x["host"], x["decision"]) for x in log}
    assert decisions >= EXPECTED_DECISIONS, decisions
    tunnel = next(x for x in log if x["host"] == "passthru.test")
    assert isinstance(tunnel["bytes"], int) and tunnel["bytes"] > 0
    for f in (e.paths.log, e.paths.engine_log, e.paths.config, e.paths.guest_env):
        assert VALUE not in f.read_text(), f
    cmdline = Path(f"/proc/{e.pid}/cmdline").read_bytes()
    assert VALUE.encode() not in cmdline and cmdline.split(b"\0")[-2] == str(e.vm_dir).encode()


ATTACK = (
    "GET https://secret.test/stolen HTTP/1.1\r\nHost: secret.test\r\n"
    f"Authorization: Bearer {PLACEHOLDER}\r\n\r\n"
)

# Run as another user: try the socket, then the engine's loopback port.
ATTACKER = r"""
import socket, sys
path, port, request = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode()
s = socket.socket(socket.AF_UNIX)
try:
    s.connect(path)
    print("socket: connected")
except PermissionError:
    print("socket: refused")
t = socket.create_connection(("127.0.0.1", port), timeout=10)
t.sendall(request)
data = b""
try:
    while chunk := t.recv(65536):
        data += chunk
except (ConnectionError, TimeoutError):
    pass
print("port:", repr(data[:200]))
"""


def test_no_other_user_or_process_can_use_the_proxy(
    engine: Engine, unprivileged: Unprivileged, open_dir: Path
) -> None:
    e = engine
    (port,) = listening_ports(e.pid)
    script = open_dir / "attacker.py"
    script.write_text(ATTACKER)
    os.chmod(script, 0o644)
    # Everything above the state dir lets others through: only agent-vm's
    # own directories stand between them and the socket.
    assert all(os.stat(p).st_mode & 0o001 for p in open_dir.parents) and (
        open_dir.stat().st_mode & 0o005
    )
    argv = ["python3", str(script), str(e.paths.socket), str(port), ATTACK]
    if os.getuid() == 0:
        argv = ["runuser", "-u", unprivileged.name, "--", *argv]
    out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=60).stdout
    assert "socket: refused" in out, out
    assert "port: b''" in out, out  # cut off before a byte is answered
    # Not even another process of the same user (here: this test) gets through.
    t = socket.create_connection(("127.0.0.1", port), timeout=10)
    assert raw_exchange(t, ATTACK.encode()) == b""
    t.close()
    assert not any(x.get(":path") == "/stolen" for x in e.up.seen)
    assert not any(x.get("path") == "/stolen" for x in (e.log() if e.paths.log.exists() else []))
    assert oct(os.stat(e.paths.dir).st_mode & 0o777) == "0o700"
    assert oct(os.stat(e.paths.confdir / "mitmproxy-ca.pem").st_mode & 0o777) == "0o600"


def test_the_engine_goes_with_its_parent(engine: Engine) -> None:
    pid = engine.pid
    os.kill(engine.parent.pid, signal.SIGKILL)  # the shell, as QEMU would die
    engine.parent.wait()
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        if state == "Z":
            break
        time.sleep(0.1)
    assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text()
    assert not engine.paths.socket.exists()  # a clean exit: nothing to connect to
