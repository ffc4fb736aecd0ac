"""Suspend and resume on a real VM (two boots): a process keeps running with
its pid, files and the clock are right, SSH (pinned key) and the agent
answer; the snapshot is private; a snapshot whose disk was touched is
refused; stop discards it. Then the disk workspace: the agent's commit comes
out only as a verified bundle, destroy refuses until the repository has it,
and nothing of the workspace is a file on the host."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

from harness import Cli, git, processes_under

# A counter that writes the guest's time each second to the guest disk.
COUNTER = (
    "nohup setsid sh -c 'while :; do date +%s >> /home/dev/counter; sleep 1; done' "
    ">/dev/null 2>&1 < /dev/null & echo $!"
)


def status(cli: Cli, repo: Path) -> dict:  # type: ignore[type-arg]
    return json.loads(cli("status", "--json", cwd=repo).stdout)


def guest(cli: Cli, repo: Path, script: str) -> str:
    return cli("shell", "--", "sh", "-c", script, cwd=repo).stdout


def test_suspend_and_resume(cli: Cli, repo: Path) -> None:
    name = cli("create", "--workspace-mode", "disk", "--json", cwd=repo).json()["name"]
    vm = cli.state_dir / "vms" / name
    cli("start", cwd=repo)
    counter_pid = int(guest(cli, repo, COUNTER).strip())
    guest(cli, repo, "echo before > /home/dev/before && sync")

    out = cli("suspend", cwd=repo).stdout
    assert f"suspended VM {name}" in out
    st = status(cli, repo)
    assert st["state"] == "suspended" and st["pid"] is None
    assert st["snapshot_bytes"] > 0 and st["snapshot_age_seconds"] >= 0
    assert "snapshot:" in cli("status", cwd=repo).stdout
    # Nothing of the VM runs; what holds it is private to us.
    assert processes_under(vm) == []
    for f in ("snapshot.vmstate", "snapshot.json", "memory.ram"):
        assert stat.S_IMODE((vm / f).stat().st_mode) == 0o600, f

    # Long enough that a clock left standing would be off by more than 2 s.
    time.sleep(6)
    cli("resume", cwd=repo)
    st = status(cli, repo)
    assert st["state"] == "running" and st["agent_reachable"] is True
    # SSH with the pinned host key: every `shell` below (status's own probe
    # gives a login 3 s, which a loaded TCG host can exceed).
    assert [s["stage"] for s in st["stages"]] == ["qemu", "restore", "clock", "ssh", "agent"]
    assert not (vm / "snapshot.json").exists()  # used once, then gone

    before = time.time()
    out = guest(cli, repo, f"kill -0 {counter_pid} && date +%s.%N && cat /home/dev/before")
    after = time.time()
    guest_time, content = out.split()
    assert before - 2 <= float(guest_time) <= after + 2, (before, guest_time, after)
    assert content == "before"
    # The counter ran on: it wrote the guest's (corrected) time after the resume.
    time.sleep(2)
    last = int(guest(cli, repo, "tail -n 1 /home/dev/counter").strip())
    assert abs(last - time.time()) <= 4

    # A snapshot whose disk changed afterwards is refused, by start too.
    cli("suspend", cwd=repo)
    os.utime(vm / "disk.qcow2")
    refused = cli("start", cwd=repo, check=False)
    assert refused.returncode == 20, refused
    assert "disk.qcow2 changed after the VM was suspended" in refused.stderr
    assert "'agent-vm stop' discards the snapshot" in refused.stderr
    assert status(cli, repo)["state"] == "suspended"
    assert processes_under(vm) == []

    # stop discards it.
    cli("stop", cwd=repo)
    assert status(cli, repo)["state"] == "stopped"
    assert not any((vm / f).exists() for f in ("snapshot.json", "snapshot.vmstate", "memory.ram"))

    # The disk workspace: the agent's commit leaves only as a bundle the
    # host verifies; destroy refuses while the repository lacks it.
    cli("start", cwd=repo)
    guest(
        cli,
        repo,
        "cd /workspace && echo agent > work && git add work && "
        "git -c user.name=a -c user.email=a@b commit -qm 'agent work'",
    )
    agent_commit = guest(cli, repo, "git -C /workspace rev-parse HEAD").strip()
    refused = cli("destroy", cwd=repo, check=False)
    assert refused.returncode == 13, refused
    assert "ref(s) whose commits are not in" in refused.stderr
    private = vm / "bundle" / "git"
    assert git(repo, "--git-dir", str(private), "cat-file", "-t", agent_commit).strip() == "commit"
    # Nothing of the workspace is a file on the host: no clone, no checkout.
    assert not (vm / "workspace").exists()
    assert [p for p in vm.rglob("work") if p.is_file()] == []
    assert [p for p in vm.rglob("README")] == []
    # What `pull` does through the quarantine (issue 9): from the verified
    # private git dir into the repository. Then nothing would be lost.
    git(repo, "fetch", "-q", str(private), f"{agent_commit}:refs/heads/agent")
    cli("destroy", cwd=repo)
    assert not vm.exists()
    # The runner shell ends a moment after its QEMU.
    deadline = time.monotonic() + 10
    while processes_under(cli.state_dir) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert processes_under(cli.state_dir) == []
