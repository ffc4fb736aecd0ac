"""Helpers shared by the end-to-end tests (fixtures are in conftest.py)."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import pty
import select
import shutil
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

NIX_CONFIG = "experimental-features = nix-command flakes\nsubstituters =\n"

# Readiness timeout for every command: TCG boots take 30-60 s alone and more
# when two VMs boot at once on a small machine, and the agent (the real
# mcp-proxy, Python) needs tens of seconds more under TCG, minutes on a
# loaded machine. Tests about timeouts pass their own --timeout, which comes
# later on the command line and wins.
READY_TIMEOUT = "480"


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str

    def json(self) -> dict:  # type: ignore[type-arg]
        return json.loads(self.stdout)


@dataclass
class Cli:
    """Runs the installed agent-vm as a subprocess, as a given user."""

    binary: str
    state_dir: Path
    env: dict[str, str]
    user: str | None = None
    calls: list[list[str]] = field(default_factory=list)

    def argv(self, *args: str) -> list[str]:
        base = [self.binary, "--state-dir", str(self.state_dir), "--timeout", READY_TIMEOUT, *args]
        if self.user is None:
            return base
        envs = [f"{k}={v}" for k, v in self.env.items()]
        return ["runuser", "-u", self.user, "--", "env", *envs, *base]

    def __call__(
        self,
        *args: str,
        cwd: Path,
        check: bool = True,
        timeout: float = 600,
        input: str | None = None,
    ) -> Result:
        argv = self.argv(*args)
        self.calls.append(argv)
        env = dict(os.environ) | self.env if self.user is None else None
        res = subprocess.run(
            argv,
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            input=input,
        )
        r = Result(res.returncode, res.stdout, res.stderr)
        if check and res.returncode != 0:
            raise AssertionError(
                f"agent-vm {' '.join(args)} exited {res.returncode}\n"
                f"stdout:\n{res.stdout}\nstderr:\n{res.stderr}"
            )
        return r


def processes_under(path: Path) -> list[int]:
    """Pids of processes whose command line mentions `path`."""
    marker = str(path).encode()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes()
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if marker in cmd and state != "Z":
            found.append(int(proc.name))
    return found


def kill_processes_under(path: Path) -> list[int]:
    """SIGKILL every live process whose command line mentions `path`."""
    killed = []
    for pid in processes_under(path):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
    return killed


def base_env(flake: Path, guest: Path) -> dict[str, str]:
    engine = os.environ.get("AGENT_VM_TEST_EGRESS_ENGINE", "")
    if not os.access(engine, os.X_OK):
        # New VMs default to --network allow, whose runner starts it.
        raise AssertionError(
            "AGENT_VM_TEST_EGRESS_ENGINE must name agent-vm-egress (./run-tests sets it)"
        )
    return {
        "AGENT_VM_FLAKE": f"path:{flake}",
        "AGENT_VM_TEST_GUEST": str(guest),
        "AGENT_VM_TEST_EGRESS_ENGINE": engine,
        "AGENT_VM_ACCEL": "tcg",
        "NIX_CONFIG": NIX_CONFIG,
        "NO_COLOR": "1",
    }


def git(repo: Path, *args: str, user: str | None = None) -> str:
    argv = ["git", "-C", str(repo), *args]
    if user:
        argv = ["runuser", "-u", user, "--", *argv]
    env = dict(
        os.environ,
        GIT_AUTHOR_NAME="t",
        GIT_AUTHOR_EMAIL="t@example.invalid",
        GIT_COMMITTER_NAME="t",
        GIT_COMMITTER_EMAIL="t@example.invalid",
    )
    return subprocess.run(argv, check=True, capture_output=True, text=True, env=env).stdout


def make_repo(path: Path, user: str | None = None) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    if user:
        shutil.chown(path, user, user)
    git(path, "init", "-q", "-b", "main", user=user)
    (path / "README").write_text("hello\n")
    if user:
        shutil.chown(path / "README", user, user)
    git(path, "add", "README", user=user)
    git(path, "commit", "-q", "-m", "init", user=user)
    return path


@dataclass
class Unprivileged:
    name: str
    uid: int
    gid: int
    home: Path


def unprivileged_cli(binary: str, flake: Path, guest: Path, who: Unprivileged, state: Path) -> Cli:
    """The CLI as the unprivileged user (when the tests run as root) through
    the nix daemon."""
    env = base_env(flake, guest) | {
        "HOME": str(who.home),
        "NIX_REMOTE": "daemon",
        "PATH": os.environ["PATH"],
    }
    return Cli(binary, state, env, user=who.name if os.getuid() == 0 else None)


def outbound_probe(port: int) -> list[str]:
    """A guest command that fetches http://<host NAT address>:port/ (bash's
    /dev/tcp: busybox wget crashes in the test guest)."""
    request = (
        f"exec 3<>/dev/tcp/10.0.2.2/{port} && printf 'GET / HTTP/1.0\\r\\n\\r\\n' >&3 && cat <&3"
    )
    return ["timeout", "10", "bash", "-c", request]


def store_files(runner: Path) -> list[Path]:
    """Every file Nix made or read for a VM's runner: the runner, its .drv
    and the .drv's references (where a secret would show if it entered
    the store)."""
    drv = subprocess.run(
        ["nix-store", "-q", "--deriver", str(runner)], capture_output=True, text=True, check=True
    ).stdout.strip()
    inputs = [runner, Path(drv)]
    inputs += [
        Path(p)
        for p in subprocess.run(
            ["nix-store", "-q", "--references", drv], capture_output=True, text=True, check=True
        ).stdout.split()
    ]
    return [f for p in inputs for f in ([p] if p.is_file() else p.rglob("*")) if f.is_file()]


def agent_request(
    port: int,
    method: str = "GET",
    path: str = "/status",
    *,
    token: str | None,
    host: str | None = None,
    body: dict | None = None,  # type: ignore[type-arg]
    session: str | None = None,
) -> tuple[int, dict[str, str], str]:
    """One HTTP request to a VM's agent port: (status, headers, body).

    `host` is the Host header (default 127.0.0.1:<port>, what a client on
    the host sends); `token` goes in `Authorization: Bearer`."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = {"Host": host or f"127.0.0.1:{port}"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    if session is not None:
        headers["mcp-session-id"] = session
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
        headers["Accept"] = "application/json, text/event-stream"
    try:
        conn.request(method, path, body=data, headers=headers)
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read().decode()
    finally:
        conn.close()


# The MCP initialize request a test client opens a session with (the
# end-to-end agent port and the Nix-generated mcp-proxy in tests/nix).
MCP_INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-03-26",
        "capabilities": {},
        "clientInfo": {"name": "agent-vm-tests", "version": "1"},
    },
}


def jsonrpc_result(text: str) -> dict:  # type: ignore[type-arg]
    """The JSON-RPC message of a streamable-HTTP answer (JSON or one SSE event)."""
    if text.lstrip().startswith("{"):
        return json.loads(text)  # type: ignore[no-any-return]
    data = [line[5:].strip() for line in text.splitlines() if line.startswith("data:")]
    return json.loads(data[-1])  # type: ignore[no-any-return]


def run_on_tty(cli: Cli, *args: str, cwd: Path, env: dict[str, str]) -> tuple[int, str]:
    """Run the CLI with stdin/stdout/stderr on a pseudo-terminal."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        cli.argv(*args), cwd=cwd, env=env, stdin=slave, stdout=slave, stderr=slave
    )
    os.close(slave)
    out = b""
    while True:
        ready, _, _ = select.select([master], [], [], 60)
        if not ready:
            proc.kill()
            break
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    return proc.wait(timeout=60), out.decode(errors="replace")
