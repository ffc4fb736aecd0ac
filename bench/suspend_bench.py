#!/usr/bin/env python3
"""Suspend/resume and the disk workspace, measured through the CLI.

Run as root on the test machine (after ./run-tests has installed things):

    /opt/agent-vm-tests/venv/bin/python bench/suspend_bench.py [--files 50000] [--no-share]

One repository with `--files` files in one commit, two branches of it:

* a `--workspace-mode disk` VM: `start` of the built VM (cold start to
  ready), then `suspend` + `resume` at three levels of guest memory in use
  (as booted, then with 256 and 768 MiB more held in the guest's /dev/shm):
  resume-to-ready against that cold start (wall time, and the CPU time
  QEMU used until ready, which other load on the machine does not
  inflate), suspend seconds and snapshot bytes against the memory in use;
* the same branch content in a share (9p) VM and in the disk VM: `git
  status` and a full-tree `grep -r` timed inside the guest (the guest's own
  clock around the command, so SSH is not counted), median of 3.

Nothing asserts; the numbers go to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))

from harness import Cli, base_env, git, kill_processes_under  # noqa: E402

from bench import installed_cli, setup  # noqa: E402

# A guest command timed by the guest's clock, in seconds.
TIMED = (
    't0=$(date +%s%N); {cmd} >/dev/null 2>&1; t1=$(date +%s%N); echo "$(( (t1 - t0) / 1000000 ))"'
)


def many_files_repo(path: Path, files: int) -> Path:
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    chunks = ["commit refs/heads/main\ncommitter b <b@example.invalid> 1700000000 +0000\n"]
    chunks.append("data 5\nmany\n")
    for i in range(files):
        data = f"file {i} needle-{i % 97}\n"
        chunks.append(f"M 644 inline d{i // 500:03d}/f{i:05d}.txt\ndata {len(data)}\n{data}")
    subprocess.run(
        ["git", "-C", str(path), "fast-import", "--quiet"],
        input="".join(chunks).encode() + b"\n",
        check=True,
    )
    git(path, "checkout", "-q", "-f", "main")
    git(path, "branch", "share-b")
    git(path, "branch", "disk-b")
    return path


# 9p takes minutes for one git status over 50 000 files under TCG.
GUEST_TIMEOUT = 3600.0


def timed(cli: Cli, repo: Path, vm: str, cmd: str) -> float:
    script = TIMED.format(cmd=cmd)
    out = cli("shell", vm, "--", "sh", "-c", script, cwd=repo, timeout=GUEST_TIMEOUT).stdout
    return int(out.strip().splitlines()[-1]) / 1000


def in_guest(cli: Cli, repo: Path, vm: str, runs: int) -> dict[str, list[float]]:
    """git status and grep, each `runs` times (the first run also warms the
    guest's caches: all samples are kept)."""
    return {
        "git_status": [
            timed(cli, repo, vm, "git -C /workspace status --porcelain") for _ in range(runs)
        ],
        "grep": [timed(cli, repo, vm, "grep -r needle-42 /workspace") for _ in range(runs)],
    }


def note(res: dict[str, object], key: str, value: object) -> None:
    """Record a result and show it at once: a later failure loses nothing."""
    res[key] = value
    print(json.dumps({key: value}), file=sys.stderr, flush=True)


def qemu_cpu(cli: Cli, repo: Path, vm: str) -> float:
    """CPU seconds the VM's QEMU has used so far: unlike wall time, not
    inflated by other work on a shared machine."""
    pid = cli("status", vm, "--json", cwd=repo).json()["pid"]
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def used_mib(cli: Cli, repo: Path, vm: str) -> int:
    script = "free -m | awk '/^Mem:/ {print $3 + $5}'"  # used + shared (tmpfs)
    return int(cli("shell", vm, "--", "sh", "-c", script, cwd=repo).stdout.strip())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=50_000)
    # The share (9p) VM's git timings take tens of minutes under TCG.
    ap.add_argument("--no-share", action="store_true", help="skip the 9p VM's git timings")
    args = ap.parse_args()
    agent_vm = installed_cli()
    guest, flake = setup()
    tmp = Path(tempfile.mkdtemp(prefix="agent-vm-bench-"))
    res: dict[str, object] = {"files": args.files}
    try:
        cli = Cli(agent_vm, tmp / "state", base_env(flake, guest))
        repo = many_files_repo(tmp / "repo", args.files)

        t0 = time.perf_counter()
        disk = cli("create", "-b", "disk-b", "--workspace-mode", "disk", "--json", cwd=repo)
        note(res, "create_disk", time.perf_counter() - t0)
        dvm = disk.json()["name"]
        t0 = time.perf_counter()
        share = cli("create", "-b", "share-b", "--json", cwd=repo)
        note(res, "create_share", time.perf_counter() - t0)
        svm = share.json()["name"]

        cli("start", dvm, cwd=repo)  # builds the runner once
        cli("stop", dvm, cwd=repo)
        t0 = time.perf_counter()
        cli("start", dvm, cwd=repo)
        note(res, "cold_start", time.perf_counter() - t0)
        note(res, "cold_start_cpu", qemu_cpu(cli, repo, dvm))
        note(res, "disk_guest", in_guest(cli, repo, dvm, 3))

        levels = []
        for extra in (0, 512, 1024):
            if extra:
                cli(
                    "shell",
                    dvm,
                    "--",
                    "sh",
                    "-c",
                    f"dd if=/dev/urandom of=/dev/shm/fill-{extra} bs=1M count={extra // 2}"
                    " status=none",
                    cwd=repo,
                )
            used = used_mib(cli, repo, dvm)
            t0 = time.perf_counter()
            cli("suspend", dvm, cwd=repo)
            suspend = time.perf_counter() - t0
            st = cli("status", dvm, "--json", cwd=repo).json()
            t0 = time.perf_counter()
            cli("resume", dvm, cwd=repo)
            resume = time.perf_counter() - t0
            resume_cpu = qemu_cpu(cli, repo, dvm)
            stages = cli("status", dvm, "--json", cwd=repo).json()["stages"]
            levels.append(
                level := {
                    "used_mib": used,
                    "suspend_s": suspend,
                    "snapshot_mib": st["snapshot_bytes"] / 2**20,
                    "resume_s": resume,
                    "resume_cpu_s": resume_cpu,
                    "stages": {s["stage"]: s["seconds"] for s in stages},
                }
            )
            note(res, f"level_{extra}", level)
        cli("stop", dvm, cwd=repo)

        if not args.no_share:
            cli("start", svm, cwd=repo)
            note(res, "share_guest", in_guest(cli, repo, svm, 1))
            cli("stop", svm, cwd=repo)
        for vm in (dvm, svm):
            cli("destroy", "--force", vm, cwd=repo)
    finally:
        kill_processes_under(tmp)  # a VM left by a failed step
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(flake, ignore_errors=True)

    print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cpus, QEMU TCG")
    print(json.dumps(res, indent=2))
    cold = float(res["cold_start"])  # type: ignore[arg-type]
    cold_cpu = float(res["cold_start_cpu"])  # type: ignore[arg-type]
    print()
    print(
        "| guest memory in use | suspend | snapshot | resume to ready | ÷ cold start "
        "| QEMU CPU to ready ÷ cold |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for lv in levels:
        print(
            f"| {lv['used_mib']} MiB | {lv['suspend_s']:.2f} s | {lv['snapshot_mib']:.0f} MiB "
            f"| {lv['resume_s']:.2f} s | {lv['resume_s'] / cold:.3f} "
            f"| {lv['resume_cpu_s'] / cold_cpu:.3f} |"
        )


if __name__ == "__main__":
    main()
