"""The lifecycle on real VMs: create → start → shell → restart → destroy; two
repositories' `main` at once (and one of them crashing); supervision in the
foreground."""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from harness import (
    Cli,
    agent_request,
    git,
    make_repo,
    outbound_probe,
    processes_under,
    run_on_tty,
)


def agent_status(cli: Cli, name: str, port: int) -> tuple[int, str]:
    """GET /status on the agent port with the VM's token."""
    token = (cli.state_dir / "vms" / name / "secrets" / "agent-token").read_text().strip()
    code, _, body = agent_request(port, token=token)
    return code, body


@contextlib.contextmanager
def serving() -> Iterator[int]:
    """A one-page HTTP server on the host's loopback, for the guest to reach."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def status(cli: Cli, repo: Path, target: str | None = None) -> dict:  # type: ignore[type-arg]
    args = ["status", "--json"] + ([target] if target else [])
    return json.loads(cli(*args, cwd=repo).stdout)


def root_size_mib(cli: Cli, repo: Path) -> int:
    out = cli("shell", "--", "df", "-BM", "--output=size", "/", cwd=repo).stdout
    return int(out.split()[-1].rstrip("M"))


def virtual_size(disk: Path) -> int:
    info = subprocess.run(
        ["qemu-img", "info", "-U", "--output=json", "-f", "qcow2", str(disk)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return int(json.loads(info)["virtual-size"])


def test_full_lifecycle(cli: Cli, repo: Path) -> None:
    """Two boots: the second, after a restart, without a network, on a grown
    disk, each boot's serial and runner logs holding that boot only."""
    created = cli("create", "--network", "open", "--disk-size", "2048", "--json", cwd=repo).json()
    name = created["name"]
    vm_dir = cli.state_dir / "vms" / name
    assert created["state"] == "stopped"
    assert (created["ssh_port"], created["agent_port"]) >= (2222, 8000)

    started = cli("start", cwd=repo)
    assert "is running" in started.stdout
    # Not on a terminal: no live progress line (the restart below is on one).
    assert "\r" not in started.stderr and "guest booting" not in started.stderr

    st = status(cli, repo)
    assert st["state"] == "running"
    assert st["ssh_reachable"] is True and st["agent_reachable"] is True
    assert [s["stage"] for s in st["stages"]] == ["build", "qemu", "ssh", "agent"]
    assert all(s["seconds"] >= 0 and s["ok"] for s in st["stages"])
    assert st["uptime_seconds"] >= 0

    code, body = agent_status(cli, name, st["agent_port"])
    assert code == 200 and '"workspace"' in body

    # A file written in the guest's /workspace appears on the host, owned by us.
    out = cli(
        "shell",
        "--",
        "sh",
        "-c",
        "echo from-guest > /workspace/hello && id -un",
        cwd=repo,
    ).stdout
    assert out.strip() == "dev"
    hello = Path(st["workspace"]) / "hello"
    assert hello.read_text() == "from-guest\n"
    assert hello.stat().st_uid == os.getuid()
    # The guest sees the repository's files, and git works in there.
    assert cli("shell", "--", "cat", "/workspace/README", cwd=repo).stdout == "hello\n"
    log = cli("shell", "--", "git", "-C", "/workspace", "log", "--format=%s", cwd=repo).stdout
    assert log.strip() == "init"
    # Exit codes and arguments with spaces survive the trip.
    r = cli(
        "shell",
        "--",
        "sh",
        "-c",
        'echo "$1"; exit 7',
        "x",
        "a b 'c'",
        cwd=repo,
        check=False,
    )
    assert (r.returncode, r.stdout) == (7, "a b 'c'\n")

    # With --network open the guest reaches the host's NAT address: the
    # probe that must fail with --network none (after the restart below) succeeds.
    with serving() as port:
        probe = cli("shell", "--", *outbound_probe(port), cwd=repo)
    assert probe.stdout.startswith("HTTP/1.0 200"), probe.stdout

    # The test guest's image is smaller (~1.5 GiB): grown at the first start.
    assert virtual_size(vm_dir / "disk.qcow2") == 2048 << 20
    assert 1800 <= root_size_mib(cli, repo) <= 2048
    cli("shell", "--", "sh", "-c", "echo kept > ~/persist && sync", cwd=repo)
    pid = status(cli, repo)["pid"]
    # QEMU cannot save a VM whose 9p share is mounted: suspend says so, and
    # the VM runs on untouched.
    refused = cli("suspend", cwd=repo, check=False)
    assert refused.returncode == 21, refused
    assert "9p workspace share is mounted" in refused.stderr
    assert "--workspace-mode disk" in refused.stderr
    st = status(cli, repo)
    assert (st["state"], st["pid"], st["ssh_reachable"]) == ("running", pid, True)
    assert not (vm_dir / "snapshot.json").exists()
    r = cli("update", "--disk-size", "1024", cwd=repo, check=False)
    assert r.returncode == 2, r.stderr
    assert "a disk cannot shrink" in r.stderr and "agent-vm reset" in r.stderr
    # The next boot without a network (the same probe must now fail), on a
    # larger disk.
    cli("update", "--network", "none", "--disk-size", "3072", cwd=repo)
    # On a terminal, with the live progress line (the first start had none).
    code, out = run_on_tty(cli, "restart", cwd=repo, env=dict(os.environ) | cli.env)
    assert code == 0, out
    assert "[2/3] guest booting, waiting for SSH … " in out and "is running" in out, out
    st = status(cli, repo)
    assert st["state"] == "running" and st["pid"] != pid
    assert virtual_size(vm_dir / "disk.qcow2") == 3072 << 20
    assert 2800 <= root_size_mib(cli, repo) <= 3072
    assert "run-agent-vm: disk grown from 2048M to 3072M" in (vm_dir / "runner.log").read_text()
    with serving() as port:
        probe = cli("shell", "--", *outbound_probe(port), cwd=repo, check=False)
    assert probe.returncode != 0 and "200 OK" not in probe.stdout, probe
    # Forwards still work both ways for SSH and the agent.
    assert st["agent_reachable"] is True
    serial = (vm_dir / "serial.log").read_text(errors="replace")
    before = (vm_dir / "serial.log.1").read_text(errors="replace")
    assert serial.count("Linux version") == 1  # this boot's only
    assert before.count("Linux version") == 1  # the boot before, kept
    # The restart powered the guest down.
    assert "reboot: Power down" in before and "reboot: Power down" not in serial
    prev = cli("logs", "--previous", cwd=repo).stdout
    assert "reboot: Power down" in prev and "--- previous boot's serial log" in prev
    assert cli("shell", "--", "cat", "persist", cwd=repo).stdout == "kept\n"
    logs = cli("logs", cwd=repo).stdout
    assert "Linux version" in logs and "agent service journal" in logs
    cli("shell", "--", "rm", "/workspace/hello", cwd=repo)
    cli("destroy", cwd=repo)
    assert not (cli.state_dir / "vms" / name).exists()
    assert cli("list", "--json", cwd=repo).json()["vms"] == []


def test_two_repositories_with_the_same_branch(cli: Cli, repo: Path, tmp_path: Path) -> None:
    """Two VMs at once, for `main` of two repositories: each repository's
    commands reach only its own VM, and `up` with settings in one never
    takes over the other's (it used to rewrite and start it)."""
    other = make_repo(tmp_path / "other")
    a = cli("create", "--json", cwd=repo).json()
    a_cfg = (cli.state_dir / "vms" / a["name"] / "vm.json").read_text()
    free = [free_port(), free_port()]
    errors: list[AssertionError] = []

    def run(*args: str, cwd: Path) -> None:
        try:
            cli(*args, cwd=cwd)
        except AssertionError as exc:
            errors.append(exc)

    pinned = ("--memory", "1024", "--pin", "--ssh-port", str(free[0]), "--port", str(free[1]))
    threads = [
        threading.Thread(target=run, args=("start",), kwargs={"cwd": repo}),
        threading.Thread(
            target=run, args=("up", "--branch", "main", *pinned), kwargs={"cwd": other}
        ),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors

    b = status(cli, other, "main")
    assert b["name"] != a["name"] and b["repo"] == str(other)
    assert (b["ssh_port"], b["agent_port"]) == (free[0], free[1])
    assert json.loads((cli.state_dir / "vms" / a["name"] / "vm.json").read_text()) == json.loads(
        a_cfg
    )  # A's VM untouched by B's `up`
    rows = {r["name"]: r for r in cli("list", "--json", cwd=tmp_path).json()["vms"]}
    assert rows[a["name"]]["state"] == rows[b["name"]]["state"] == "running"
    for row in rows.values():
        assert agent_status(cli, row["name"], row["agent_port"])[0] == 200
    # Each repository's commands (by branch or by default) reach its own VM.
    for cwd, mine in ((repo, a["name"]), (other, b["name"])):
        assert status(cli, cwd)["name"] == status(cli, cwd, "main")["name"] == mine
        assert cli("shell", "main", "--", "hostname", cwd=cwd).stdout.strip() == mine
    # Outside both, the branch name is ambiguous: an error naming both VMs.
    r = cli("status", "main", cwd=tmp_path, check=False)
    assert r.returncode == 2 and a["name"] in r.stderr and b["name"] in r.stderr, r.stderr

    # One VM's QEMU dies (killed, OOM): status says so, the other one runs on.
    os.kill(rows[a["name"]]["pid"], signal.SIGKILL)
    crashed = status(cli, repo)
    assert crashed["state"] == "failed" and "exited unexpectedly" in crashed["reason"]
    assert status(cli, other)["state"] == "running"
    assert cli("shell", "--", "true", cwd=other).returncode == 0

    # A stop takes the VM's egress proxy (--network allow, the default)
    # away with its QEMU.
    engine = cli.state_dir / "vms" / b["name"] / "egress" / "engine.json"
    engine_pid = json.loads(engine.read_text())["pid"]
    assert Path(f"/proc/{engine_pid}").exists()
    cli("stop", cwd=other)
    deadline = time.monotonic() + 10
    while Path(f"/proc/{engine_pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not Path(f"/proc/{engine_pid}").exists()
    assert processes_under(cli.state_dir) == []
    cli("destroy", cwd=repo)
    cli("destroy", b["name"], cwd=tmp_path)


def test_destroy_refuses_unsaved_work(cli: Cli, repo: Path) -> None:
    vm = cli("create", "--json", cwd=repo).json()
    ws = Path(vm["workspace"])
    (ws / "draft.txt").write_text("wip\n")
    r = cli("destroy", cwd=repo, check=False)
    assert r.returncode == 13
    assert "uncommitted" in r.stderr and "Traceback" not in r.stderr
    assert ws.exists()

    git(ws, "add", "draft.txt")
    git(ws, "commit", "-q", "-m", "wip")
    r = cli("destroy", cwd=repo, check=False)
    assert r.returncode == 13 and "exist nowhere else" in r.stderr

    cli("destroy", "--force", cwd=repo)
    assert not ws.exists()


def wait_running(cli: Cli, repo: Path, proc: subprocess.Popen[str]) -> dict:  # type: ignore[type-arg]
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        st = status(cli, repo)
        if st["state"] == "running":
            return st
        time.sleep(1)
    raise AssertionError("the supervised VM never became ready")


def test_foreground_start_supervises_the_vm(cli: Cli, repo: Path, tmp_path: Path) -> None:
    """`up --foreground` is what the NixOS host module's Type=notify units
    run; `start --foreground` is the same supervision."""
    name = cli("create", "--json", cwd=repo).json()["name"]
    # The first start takes the KVM path (test_kvm.py shows KVM hangs here):
    # a probe answer cached from before KVM broke sends it to KVM, and its
    # silent console makes it start again under TCG by itself.
    cli.env["AGENT_VM_ACCEL"] = "auto"
    boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    probe_cache = cli.state_dir / "kvm-probe.json"
    probe_cache.write_text(json.dumps({"boot_id": boot_id, "usable": True, "detail": "before"}))
    env = dict(os.environ) | cli.env

    def supervised(*verb: str, extra: dict[str, str] | None = None) -> subprocess.Popen[str]:
        return subprocess.Popen(
            cli.argv(*verb, "--foreground"),
            cwd=repo,
            env=env | (extra or {}),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    # QEMU dying behind its back: the supervisor fails (systemd restarts it).
    proc = supervised("start")
    st = wait_running(cli, repo, proc)
    pid = st["pid"]
    assert st["agent_reachable"] is True
    vm = cli.state_dir / "vms" / name
    events = [json.loads(x) for x in (vm / "events.log").read_text().splitlines()]
    fallback = [e for e in events if e["kind"] == "accel.fallback"]
    assert [e["message"] for e in fallback] == [
        "no console output under KVM for 10s: KVM cannot run this guest here; "
        "starting again under TCG"
    ], events
    cache = json.loads(probe_cache.read_text())
    assert cache["usable"] is False and "printed nothing" in cache["detail"]
    # The runner ran twice (-accel kvm, then -accel tcg); one boot's log.
    assert (vm / "serial.log").read_text(errors="replace").count("Linux version") == 1
    os.kill(pid, signal.SIGKILL)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 15, err
    assert "QEMU exited" in err
    assert "starting again under TCG" in err  # a warning the user sees
    assert status(cli, repo)["state"] == "failed"

    # The unit's restart: `up` recovers the failed VM (a new QEMU that works)
    # and tells systemd READY only once it is ready.
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(str(tmp_path / "notify"))
        notify.settimeout(400)
        proc = supervised("up", extra={"NOTIFY_SOCKET": str(tmp_path / "notify")})
        ready = notify.recv(4096).decode().splitlines()
        assert ready[0] == "READY=1", ready
        st = status(cli, repo)
        assert st["state"] == "running" and st["pid"] != pid
        assert st["agent_reachable"] is True
        assert cli("shell", "--", "true", cwd=repo).returncode == 0

        # SIGTERM (systemd stopping the unit) powers the guest down cleanly.
        proc.send_signal(signal.SIGTERM)
        assert notify.recv(4096).decode().splitlines()[0] == "STOPPING=1"
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    st = status(cli, repo)
    assert st["state"] == "stopped" and st["pid"] is None
    serial = Path(st["workspace"]).parent / "serial.log"
    assert "reboot: Power down" in serial.read_text(errors="replace")
    cli("destroy", cwd=repo)
