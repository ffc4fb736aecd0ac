"""Across boots: a larger --disk-size grows the disk and the guest's root
file system, a smaller one is refused; each boot's serial and runner logs
hold that boot only, the one before kept as .1."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from harness import Cli


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


def test_disk_growth_and_one_boot_per_log(cli: Cli, repo: Path) -> None:
    name = cli("create", "--disk-size", "2048", "--json", cwd=repo).json()["name"]
    vm = cli.state_dir / "vms" / name
    cli("start", cwd=repo)
    # The test guest's image is smaller (~1.5 GiB): grown at the first start.
    assert virtual_size(vm / "disk.qcow2") == 2048 << 20
    assert 1800 <= root_size_mib(cli, repo) <= 2048
    cli("shell", "--", "sh", "-c", "echo kept > ~/data", cwd=repo)
    cli("stop", cwd=repo)

    r = cli("update", "--disk-size", "1024", cwd=repo, check=False)
    assert r.returncode == 2, r.stderr
    assert "a disk cannot shrink" in r.stderr and "agent-vm reset" in r.stderr
    cli("update", "--disk-size", "3072", cwd=repo)
    cli("start", cwd=repo)
    assert virtual_size(vm / "disk.qcow2") == 3072 << 20
    assert 2800 <= root_size_mib(cli, repo) <= 3072
    assert cli("shell", "--", "cat", "data", cwd=repo).stdout == "kept\n"
    assert "run-agent-vm: disk grown from 2048M to 3072M" in (vm / "runner.log").read_text()

    # This boot's serial log, and the previous boot's (which ended in the
    # stop's power-down) beside it.
    serial = (vm / "serial.log").read_text(errors="replace")
    before = (vm / "serial.log.1").read_text(errors="replace")
    assert serial.count("Linux version") == 1 and before.count("Linux version") == 1
    assert "reboot: Power down" in before and "reboot: Power down" not in serial
    prev = cli("logs", "--previous", cwd=repo).stdout
    assert "reboot: Power down" in prev and "--- previous boot's serial log" in prev
    cli("stop", cwd=repo)
