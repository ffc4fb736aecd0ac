"""Suspend and resume, and the disk workspace, on one real VM with one cold
boot (every later start is a resume): a process keeps running with its pid,
files and the clock are right, SSH (pinned key) and the agent (with its
token) answer, the snapshot is private, the resume continues the boot's
serial log; the agent's commit in /workspace comes out only through the
quarantine (diff, pull), destroy refuses until it is pulled; a snapshot
whose disk was touched is refused; destroy removes the suspended VM and its
snapshot, and nothing of the workspace was ever a file on the host."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

from harness import Cli, agent_request, git, processes_under

# A counter that writes the guest's time each second to the guest disk.
COUNTER = (
    "nohup setsid sh -c 'while :; do date +%s >> /home/dev/counter; sleep 1; done' "
    ">/dev/null 2>&1 < /dev/null & echo $!"
)
AGENT_COMMIT = (
    "cd /workspace && echo agent > work && git add work && "
    "git -c user.name=agent -c user.email=agent@vm commit -qm 'agent work' && "
    "git rev-parse HEAD"
)
SNAPSHOT_FILES = ("snapshot.vmstate", "snapshot.json", "memory.ram")


def status(cli: Cli, repo: Path) -> dict:  # type: ignore[type-arg]
    return json.loads(cli("status", "--json", cwd=repo).stdout)


def guest(cli: Cli, repo: Path, script: str) -> str:
    return cli("shell", "--", "sh", "-c", script, cwd=repo).stdout


def suspend(cli: Cli, repo: Path, name: str, vm: Path) -> None:
    assert f"suspended VM {name}" in cli("suspend", cwd=repo).stdout
    st = status(cli, repo)
    assert st["state"] == "suspended" and st["pid"] is None, st
    assert st["snapshot_bytes"] > 0 and st["snapshot_age_seconds"] >= 0
    # Nothing of the VM runs; what holds it is private to us.
    assert processes_under(vm) == []
    for f in SNAPSHOT_FILES:
        assert stat.S_IMODE((vm / f).stat().st_mode) == 0o600, f


def test_suspend_resume_and_the_disk_workspace(cli: Cli, repo: Path) -> None:
    name = cli("create", "--workspace-mode", "disk", "--json", cwd=repo).json()["name"]
    branch = git(repo, "rev-parse", "--abbrev-ref", "HEAD").strip()
    vm = cli.state_dir / "vms" / name
    cli("start", cwd=repo)  # the one cold boot of this file
    counter_pid = int(guest(cli, repo, COUNTER).strip())
    agent_commit = guest(cli, repo, f"echo before > /home/dev/before && {AGENT_COMMIT}").strip()

    suspend(cli, repo, name, vm)
    assert "snapshot:" in cli("status", cwd=repo).stdout
    # The suspended VM's work reads from what its guest's bundle said at the suspend.
    report = cli("diff", "--json", cwd=repo).json()
    assert [c["commit"] for c in report["commits"]] == [agent_commit]

    # Long enough that a clock left standing would be off by more than 2 s.
    time.sleep(6)
    cli("resume", cwd=repo)
    st = status(cli, repo)
    assert st["state"] == "running" and st["agent_reachable"] is True
    assert [s["stage"] for s in st["stages"]] == ["qemu", "restore", "clock", "ssh", "agent"]
    assert not (vm / "snapshot.json").exists()  # used once, then gone
    token = (vm / "secrets" / "agent-token").read_text().strip()
    code, _, body = agent_request(st["agent_port"], token=token)
    assert code == 200 and '"workspace"' in body
    # SSH with the pinned host key: the shell commands below.
    before = time.time()
    out = guest(cli, repo, f"kill -0 {counter_pid} && date +%s.%N && cat /home/dev/before")
    after = time.time()
    guest_time, content = out.split()
    assert before - 2 <= float(guest_time) <= after + 2, (before, guest_time, after)
    assert content == "before"
    # The counter ran on with the same pid: it wrote the guest's (corrected)
    # time after the resume.
    time.sleep(2)
    last = int(guest(cli, repo, f"kill -0 {counter_pid} && tail -n 1 /home/dev/counter").strip())
    assert abs(last - time.time()) <= 4
    # The resume went on with the boot's serial log; no boot was kept as .1.
    assert (vm / "serial.log").read_text(errors="replace").count("Linux version") == 1
    assert not (vm / "serial.log.1").exists() and not (vm / "runner.log.1").exists()

    # The disk workspace: the agent's commit comes out through the quarantine.
    refused = cli("destroy", cwd=repo, check=False)
    assert refused.returncode == 13, refused
    assert "1 commit(s) on branch(es)" in refused.stderr and "agent-vm pull" in refused.stderr
    shown = cli("diff", cwd=repo).stdout
    assert f"{agent_commit[:12]} agent work" in shown and "+agent" in shown
    pulled = cli("pull", cwd=repo).stdout
    assert f"pulled 1 commit(s) into agent/{branch}" in pulled
    assert git(repo, "rev-parse", f"agent/{branch}").strip() == agent_commit
    assert git(repo, "show", f"agent/{branch}:work") == "agent\n"
    # Nothing of the workspace is a file on the host: no clone, no checkout.
    assert not (vm / "workspace").exists()
    for present in ("work", "README"):
        assert [p for p in cli.state_dir.rglob(present)] == [], present

    # A snapshot whose disk changed afterwards is refused, by start too.
    suspend(cli, repo, name, vm)
    os.utime(vm / "disk.qcow2")
    refused = cli("start", cwd=repo, check=False)
    assert refused.returncode == 20, refused
    assert "disk.qcow2 changed after the VM was suspended" in refused.stderr
    assert "'agent-vm stop' discards the snapshot" in refused.stderr
    assert status(cli, repo)["state"] == "suspended"
    assert processes_under(vm) == []

    # The pull made destroy safe without --force (judged from the refs the
    # guest's bundle gave at the suspend); the snapshot goes with the VM.
    cli("destroy", cwd=repo)
    assert not vm.exists()
    deadline = time.monotonic() + 10  # the runner shell ends a moment after its QEMU
    while processes_under(cli.state_dir) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert processes_under(cli.state_dir) == []
