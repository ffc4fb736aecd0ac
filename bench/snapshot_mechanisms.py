#!/usr/bin/env python3
"""Which way to save a whole VM: QEMU's mechanisms measured side by side.

Run as root on the test machine (after ./run-tests has installed things):

    /opt/agent-vm-tests/venv/bin/python bench/snapshot_mechanisms.py [--memory 2048]

One guest (the e2e tests' Debian stand-in, booted by plain QEMU with its RAM
in a `memory-backend-file,share=on` in a scratch dir) is cold-booted to a
working SSH login, then suspended and resumed once per mechanism:

* `mapped-ram`: `stop`, then `migrate file:<snap>` with the mapped-ram
  capability (QEMU >= 9): every RAM page at a fixed offset of a sparse file,
  zero pages never written; resume is `-incoming defer` + `migrate-incoming`;
* `mapped-ram-multifd`: the same with multifd (2 channels) writing pages
  in parallel, as QEMU's documentation recommends for mapped-ram;
* `stream`: the same without mapped-ram (the classic sequential stream);
* `shared-file`: `x-ignore-shared`: the RAM already is a file in the VM dir,
  only device state is written; resume maps the same file again.

For each: suspend seconds, files written (apparent and allocated bytes),
QEMU start to `migrate-incoming` done, and resume to the first SSH login,
against the cold boot to the first SSH login of the same guest in the same
run. Nothing asserts; the numbers go to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from agent_vm.qmp import Qmp, QmpError

ROOT = Path(__file__).resolve().parents[1]


def wait_migration(q: Qmp) -> dict[str, Any]:
    while True:
        st = q.execute("query-migrate")
        if st.get("status") in ("completed", "failed", "cancelled"):
            return dict(st)
        time.sleep(0.01)


def migrate(q: Qmp, caps: dict[str, bool], command: str, uri: str) -> None:
    """Set the capabilities, run `command` (migrate or migrate-incoming) to `uri`, wait."""
    q.execute(
        "migrate-set-capabilities",
        capabilities=[{"capability": k, "state": v} for k, v in caps.items()],
    )
    q.execute(command, uri=uri)
    st = wait_migration(q)
    if st["status"] != "completed":
        raise RuntimeError(f"{command} {st}")


def wait_qmp(path: Path, proc: subprocess.Popen[bytes]) -> Qmp:
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"QEMU exited {proc.returncode}")
        if path.exists():
            try:
                return Qmp(path, timeout=60)
            except (QmpError, OSError):
                pass
        time.sleep(0.01)


def anonymous_ram(argv: list[str]) -> list[str]:
    """The same VM with QEMU's default RAM (anonymous memory, no file)."""
    out = []
    skip = False
    for a in argv:
        if skip:
            skip = False
            continue
        if a == "-object":
            skip = True
            continue
        out.append(a.replace(",memory-backend=mem", ""))
    return out


def qemu_argv(guest: Path, d: Path, memory: int, incoming: bool) -> list[str]:
    argv = [
        "qemu-system-x86_64", "-nodefaults", "-no-user-config", "-display", "none",
        "-accel", "tcg",
        "-machine", "q35,sata=off,smbus=off,vmport=off,i8042=off,memory-backend=mem",
        "-object", f"memory-backend-file,id=mem,size={memory}M,mem-path={d}/mem,share=on",
        "-cpu", "max", "-m", f"{memory}M", "-smp", "2",
        "-kernel", f"{guest}/vmlinuz", "-initrd", f"{guest}/initrd.img",
        "-append", "console=ttyS0 root=/dev/vda rw agent_vm.workspace=disk",
        "-qmp", f"unix:{d}/qmp.sock,server=on,wait=off",
        "-serial", f"file:{d}/serial.log",
        "-netdev", f"user,id=net0,hostfwd=tcp:127.0.0.1:{PORT}-:22",
        "-device", "virtio-net-pci,netdev=net0",
        "-drive", f"id=disk,file={d}/disk.qcow2,if=none,format=qcow2",
        "-device", "virtio-blk-pci,drive=disk,serial=agent-vm-disk",
        "-fw_cfg", f"name=opt/io.systemd.credentials/agent-vm.ssh-host-key,file={d}/hostkey",
        "-fw_cfg", f"name=opt/io.systemd.credentials/agent-vm.authorized-keys,file={d}/id.pub",
    ]  # fmt: skip
    return argv + (["-incoming", "defer"] if incoming else [])


PORT = 2299


def ssh_ok(d: Path, port: int = PORT) -> bool:
    argv = [
        "ssh", "-i", f"{d}/id", "-p", str(port), "-o", "StrictHostKeyChecking=no",
        "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes",
        "-o", "ConnectTimeout=5", "-o", "LogLevel=ERROR", "dev@127.0.0.1", "true",
    ]  # fmt: skip
    return subprocess.run(argv, capture_output=True, check=False, timeout=60).returncode == 0


def until_ssh(d: Path, proc: subprocess.Popen[bytes], t0: float) -> float:
    while not ssh_ok(d):
        if proc.poll() is not None:
            raise RuntimeError("QEMU exited while waiting for SSH")
        time.sleep(0.05)
    return time.perf_counter() - t0


def sizes(*paths: Path) -> tuple[int, int]:
    apparent = sum(p.stat().st_size for p in paths if p.exists())
    allocated = sum(p.stat().st_blocks * 512 for p in paths if p.exists())
    return apparent, allocated


def guest_used_mib(d: Path) -> int:
    argv = [
        "ssh", "-i", f"{d}/id", "-p", str(PORT), "-o", "StrictHostKeyChecking=no",
        "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes", "-o", "LogLevel=ERROR",
        "dev@127.0.0.1", "free -m | awk '/^Mem:/ {print $3 + $6}'",
    ]  # fmt: skip
    return int(subprocess.run(argv, capture_output=True, text=True, check=True).stdout.strip())


def suspend(q: Qmp, proc: subprocess.Popen[bytes], caps: dict[str, bool], uri: str) -> float:
    t0 = time.perf_counter()
    q.execute("stop")
    migrate(q, caps, "migrate", uri)
    q.execute("quit")
    proc.wait(timeout=60)
    return time.perf_counter() - t0


def resume(
    guest: Path, d: Path, memory: int, caps: dict[str, bool], uri: str
) -> tuple[subprocess.Popen[bytes], float, float]:
    (d / "qmp.sock").unlink(missing_ok=True)
    t0 = time.perf_counter()
    proc = subprocess.Popen(qemu_argv(guest, d, memory, incoming=True))
    q = wait_qmp(d / "qmp.sock", proc)
    migrate(q, caps, "migrate-incoming", uri)
    loaded = time.perf_counter() - t0
    q.execute("cont")
    ready = until_ssh(d, proc, t0)
    q.close()
    return proc, loaded, ready


MECHANISMS: dict[str, dict[str, bool]] = {
    "mapped-ram": {"mapped-ram": True, "multifd": False, "x-ignore-shared": False},
    "mapped-ram-multifd": {"mapped-ram": True, "multifd": True, "x-ignore-shared": False},
    "stream": {"mapped-ram": False, "multifd": False, "x-ignore-shared": False},
    "shared-file": {"mapped-ram": False, "multifd": False, "x-ignore-shared": True},
}


def compare_ram(guest: Path, memory: int) -> dict[str, float]:
    """Boot the guest twice side by side, RAM in a file and anonymous RAM:
    seconds to the first SSH login, then seconds for the guest to write
    512 MiB to its /dev/shm (memory it has never touched)."""
    results: dict[str, float] = {}
    procs: dict[str, tuple[subprocess.Popen[bytes], Path, int, float]] = {}
    dirs = []
    try:
        for i, kind in enumerate(("file", "anonymous")):
            d = Path(tempfile.mkdtemp(prefix=f"agent-vm-ram-{kind}-"))
            dirs.append(d)
            prepare(guest, d)
            port = PORT + 1 + i
            argv = [
                a.replace(f"127.0.0.1:{PORT}-", f"127.0.0.1:{port}-")
                for a in qemu_argv(guest, d, memory, incoming=False)
            ]
            argv = argv if kind == "file" else anonymous_ram(argv)
            procs[kind] = (subprocess.Popen(argv), d, port, time.perf_counter())
        pending = dict(procs)
        while pending:
            for kind, (proc, d, port, t0) in list(pending.items()):
                if proc.poll() is not None:
                    raise RuntimeError(f"QEMU ({kind}) exited")
                if ssh_ok(d, port):
                    results[f"{kind}_boot_to_ssh"] = time.perf_counter() - t0
                    del pending[kind]
            time.sleep(0.05)
        for kind, (_, d, port, _) in procs.items():
            argv = [
                "ssh", "-i", f"{d}/id", "-p", str(port), "-o", "StrictHostKeyChecking=no",
                "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes",
                "-o", "LogLevel=ERROR", "dev@127.0.0.1",
                "t0=$(date +%s%N); dd if=/dev/zero of=/dev/shm/x bs=1M count=512"
                " status=none; t1=$(date +%s%N); echo $(( (t1 - t0) / 1000000 ))",
            ]  # fmt: skip
            out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
            results[f"{kind}_write_512mib"] = int(out.strip()) / 1000
    finally:
        for proc, _, _, _ in procs.values():
            proc.kill()
            proc.wait()
        for d in dirs:
            shutil.rmtree(d, ignore_errors=True)
    return results


def prepare(guest: Path, d: Path) -> None:
    for key in ("id", "hostkey"):
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", f"{d}/{key}"], check=True
        )
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-b", f"{guest}/rootfs.raw", "-F", "raw",
         f"{d}/disk.qcow2"],
        check=True,
    )  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--memory", type=int, default=2048)
    ap.add_argument("--guest", help="test guest dir (default: build-guest.sh's)")
    ap.add_argument(
        "--compare-ram",
        action="store_true",
        help="only boot the guest with its RAM in a file and with anonymous RAM, side by side",
    )
    a = ap.parse_args()
    guest = Path(
        a.guest
        or subprocess.run(
            ["bash", str(ROOT / "tests/e2e/guest/build-guest.sh")],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.split()[-1]
    )
    if a.compare_ram:
        json.dump(compare_ram(guest, a.memory), sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    d = Path(tempfile.mkdtemp(prefix="agent-vm-snapbench-"))
    results: dict[str, Any] = {"memory_mib": a.memory}
    proc: subprocess.Popen[bytes] | None = None
    try:
        prepare(guest, d)
        t0 = time.perf_counter()
        proc = subprocess.Popen(qemu_argv(guest, d, a.memory, incoming=False))
        results["cold_to_ssh"] = until_ssh(d, proc, t0)
        results["guest_used_mib"] = guest_used_mib(d)
        t1 = time.perf_counter()
        ssh_ok(d)
        results["one_ssh_login"] = time.perf_counter() - t1
        for name, caps in MECHANISMS.items():
            q = wait_qmp(d / "qmp.sock", proc)
            snap = d / f"snap-{name}"
            results[f"{name}_suspend"] = suspend(q, proc, caps, f"file:{snap}")
            results[f"{name}_size"] = sizes(snap)
            proc, loaded, ready = resume(guest, d, a.memory, caps, f"file:{snap}")
            results[f"{name}_loaded"] = loaded
            results[f"{name}_resume_to_ssh"] = ready
            results[f"{name}_ratio"] = ready / results["cold_to_ssh"]
            snap.unlink()
        results["ram_file"] = sizes(d / "mem")
        q = wait_qmp(d / "qmp.sock", proc)
        q.execute("quit")
        proc.wait(timeout=60)
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        shutil.rmtree(d, ignore_errors=True)
    json.dump(results, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    os.umask(0o077)
    sys.exit(main())
