#!/usr/bin/env python3
"""agent-vm benchmark: the CLI against baselines measured in the same run.

Run as root on the test machine (after ./run-tests has installed things):

    /opt/agent-vm-tests/venv/bin/python bench/bench.py [--runs 3]

It uses the same Debian stand-in guest and test flake as the end-to-end
tests, and prints a Markdown table of ratios with the raw medians:

* `agent-vm start` to ready  /  the bare runner started by hand to the
  first successful SSH login;
* `agent-vm status` and `list` with 20 VMs defined  /  `python -c pass`,
  wall-clock and CPU time, taking turns round by round, beside the import
  of pydantic's BaseModel (what reading a state file through its model
  costs at least); `--listing-only` measures just these, without a guest;
* `create` on a 100 000-commit repository  /  on a one-commit repository;
* `agent-vm stop` (graceful)  /  a bare QMP powerdown until QEMU exits;
* readiness detection: from the moment the forwarded port first returns
  an SSH banner to the moment agent-vm logs `ssh.connected`, against one
  SSH login measured right after.

Nothing here asserts: the numbers go to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))

from agent_vm import qmp, ssh, store  # noqa: E402
from agent_vm.paths import StateLayout  # noqa: E402
from harness import Cli, base_env, git, make_repo  # noqa: E402

VMS_FOR_LISTING = 20
BIG_HISTORY = 100_000


def median_time(fn: Callable[[], object], runs: int) -> float:
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def installed_cli() -> str:
    agent_vm = shutil.which("agent-vm")
    if agent_vm is None:
        sys.exit("bench: agent-vm is not on PATH (run ./run-tests once, then use its venv)")
    return agent_vm


def setup() -> tuple[Path, Path]:
    guest = subprocess.run(
        ["bash", str(ROOT / "tests/e2e/guest/build-guest.sh")],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()[-1]
    flake = Path(tempfile.mkdtemp(prefix="agent-vm-bench-flake-"))
    shutil.copy(ROOT / "tests/e2e/flake/flake.nix", flake / "flake.nix")
    shutil.copytree(ROOT / "lib", flake / "lib")
    return Path(guest), flake


def ssh_login_argv(state: Path, name: str) -> list[str]:
    vm = StateLayout(state).vm(name)
    cfg = store.load_config(vm)
    return ssh.command_argv(vm, cfg, cfg.ssh_port, ["true"], tty=False)


def ssh_ok(argv: list[str]) -> bool:
    return subprocess.run(argv, capture_output=True, check=False, timeout=30).returncode == 0


def bare_runner(state: Path, name: str, env: dict[str, str]) -> tuple[float, float]:
    """Start the built runner by hand; seconds to first SSH login, and seconds
    from a QMP powerdown until QEMU has exited."""
    vm = StateLayout(state).vm(name)
    argv = ssh_login_argv(state, name)
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [str(vm.runner)],
        env=dict(os.environ) | env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    while not ssh_ok(argv):
        time.sleep(0.05)
    ready = time.perf_counter() - t0
    t1 = time.perf_counter()
    qmp.powerdown(vm.qmp_socket)
    try:
        proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    return ready, time.perf_counter() - t1


class BannerWatch:
    """Polls the forwarded SSH port every 5 ms; remembers when a banner first came."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.first: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            if ssh.banner("127.0.0.1", self.port, timeout=0.5):
                self.first = time.time()
                return
            time.sleep(0.005)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def event_time(state: Path, name: str, kind: str) -> float:
    """Wall-clock time of the last `kind` event in the VM's events.log."""
    log = StateLayout(state).vm(name).events_log
    last = None
    for line in log.read_text().splitlines():
        ev = json.loads(line)
        if ev["kind"] == kind:
            last = ev["time"]
    assert last is not None, f"no {kind} event"
    return datetime.fromisoformat(last.replace("Z", "+00:00")).timestamp()


def bench_start_stop(cli: Cli, repo: Path, runs: int) -> dict[str, list[float]]:
    name = cli("create", "--json", cwd=repo).json()["name"]
    port = cli("status", "--json", cwd=repo).json()["ssh_port"]
    cli("start", cwd=repo)  # warm-up: builds the runner once
    cli("stop", cwd=repo)
    out: dict[str, list[float]] = {
        "cli_start": [],
        "bare_start": [],
        "cli_stop": [],
        "bare_stop": [],
        "detect": [],
        "verify": [],
        "login": [],
    }
    for _ in range(runs):
        watch = BannerWatch(port)
        t0 = time.perf_counter()
        cli("start", cwd=repo)
        out["cli_start"].append(time.perf_counter() - t0)
        watch.stop()
        banner = event_time(cli.state_dir, name, "ssh.banner")
        if watch.first is not None:
            out["detect"].append(banner - watch.first)
        out["verify"].append(event_time(cli.state_dir, name, "ssh.connected") - banner)
        login = ssh_login_argv(cli.state_dir, name)
        out["login"].append(median_time(lambda a=login: ssh_ok(a), 3))
        t0 = time.perf_counter()
        cli("stop", cwd=repo)
        out["cli_stop"].append(time.perf_counter() - t0)

        ready, stop = bare_runner(cli.state_dir, name, cli.env)
        out["bare_start"].append(ready)
        out["bare_stop"].append(stop)
    cli("destroy", "--force", cwd=repo)
    return out


def timed(argv: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float]:
    """Wall-clock and CPU seconds (user + system) of one run of `argv`."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(argv, cwd=cwd, env=env, check=True, capture_output=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return wall, cpu


def bench_listing(cli: Cli, repo: Path, runs: int) -> dict[str, tuple[float, float]]:
    """Median (wall, CPU) seconds of status and list with 20 VMs, and of the
    baselines. The commands take turns in every round, so a change in the
    machine's load (other VMs booting) hits them all alike."""
    for i in range(VMS_FOR_LISTING):
        git(repo, "branch", f"bench-{i:02d}")
        cli("create", "--branch", f"bench-{i:02d}", cwd=repo)
    env = dict(os.environ) | cli.env
    commands = {
        "python": [sys.executable, "-c", "pass"],
        # What any command that validates a state file with pydantic pays.
        "pydantic": [sys.executable, "-c", "from pydantic import BaseModel"],
        "status": cli.argv("status", "bench-00"),
        "list": cli.argv("list"),
    }
    samples: dict[str, list[tuple[float, float]]] = {k: [] for k in commands}
    for _ in range(runs):
        for what, argv in commands.items():
            samples[what].append(timed(argv, repo, env))
    for i in range(VMS_FOR_LISTING):
        cli("destroy", "--force", f"bench-{i:02d}", cwd=repo)
    return {
        k: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v))
        for k, v in samples.items()
    }


def listing_rows(ls: dict[str, tuple[float, float]]) -> list[str]:
    base_wall, base_cpu = ls["python"]
    rows = []
    for what, label in (("status", "status, 20 VMs"), ("list", "list, 20 VMs")):
        wall, cpu = ls[what]
        rows.append(row(f"{label} / python -c pass", wall, base_wall, "≤ 8"))
        rows.append(row(f"{label} / python -c pass (CPU time)", cpu, base_cpu, "≤ 8"))
    wall, cpu = ls["pydantic"]
    rows.append(row("import pydantic's BaseModel / python -c pass", wall, base_wall, "(floor)"))
    rows.append(row("the same (CPU time)", cpu, base_cpu, "(floor)"))
    return rows


def big_repo(path: Path, commits: int) -> Path:
    """A repository with `commits` commits, made quickly with git fast-import."""
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    chunks = []
    for i in range(1, commits + 1):
        data = f"{i}\n"
        msg = f"c{i}\n"
        parent = f"from :{i - 1}\n" if i > 1 else ""
        chunks.append(
            f"commit refs/heads/main\nmark :{i}\n"
            f"committer b <b@example.invalid> {1700000000 + i} +0000\n"
            f"data {len(msg)}\n{msg}{parent}M 644 inline f\ndata {len(data)}\n{data}\n"
        )
    subprocess.run(
        ["git", "-C", str(path), "fast-import", "--quiet"],
        input="".join(chunks).encode(),
        check=True,
    )
    git(path, "checkout", "-q", "-f", "main")
    return path


def bench_create(cli: Cli, tmp: Path, runs: int) -> dict[str, float]:
    small = make_repo(tmp / "small")
    big = big_repo(tmp / "big", BIG_HISTORY)
    count = git(big, "rev-list", "--count", "HEAD").strip()
    assert int(count) == BIG_HISTORY, count

    def create(repo: Path) -> Callable[[], object]:
        def go() -> None:
            t0 = time.perf_counter()
            cli("create", cwd=repo)
            samples[repo].append(time.perf_counter() - t0)
            cli("destroy", "--force", cwd=repo)

        return go

    samples: dict[Path, list[float]] = {small: [], big: []}
    for _ in range(runs):  # alternate so drift hits both alike
        create(small)()
        create(big)()
    return {"small": statistics.median(samples[small]), "big": statistics.median(samples[big])}


def row(what: str, value: float, base: float, target: str, unit: str = "s") -> str:
    return f"| {what} | {value:.3f} {unit} | {base:.3f} {unit} | {value / base:.2f} | {target} |"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3, help="VM boots per side (default 3)")
    ap.add_argument("--quick-runs", type=int, default=15, help="runs of the fast commands")
    ap.add_argument(
        "--listing-only",
        action="store_true",
        help="only status/list against python -c pass (no guest, no boots)",
    )
    args = ap.parse_args()

    agent_vm = installed_cli()
    tmp = Path(tempfile.mkdtemp(prefix="agent-vm-bench-"))
    if args.listing_only:
        try:
            cli = Cli(agent_vm, tmp / "state", {"AGENT_VM_ACCEL": "tcg", "NO_COLOR": "1"})
            ls = bench_listing(cli, make_repo(tmp / "repo"), args.quick_runs)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        print(f"machine: {platform.node()}, {os.cpu_count()} cpus, load {os.getloadavg()[0]:.1f}, ")
        print(f"Python {platform.python_version()}, quick runs={args.quick_runs}")
        print()
        print("| measure | agent-vm | baseline | ratio | target |")
        print("| --- | --- | --- | --- | --- |")
        print("\n".join(listing_rows(ls)))
        return
    guest, flake = setup()
    try:
        cli = Cli(agent_vm, tmp / "state", base_env(flake, guest))
        repo = make_repo(tmp / "repo")
        ss = bench_start_stop(cli, repo, args.runs)
        ls = bench_listing(cli, repo, args.quick_runs)
        cr = bench_create(cli, tmp, max(3, args.runs))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(flake, ignore_errors=True)

    med = {k: statistics.median(v) for k, v in ss.items() if v}
    print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cpus, ", end="")
    print(f"Python {platform.python_version()}, QEMU TCG, runs={args.runs}")
    print()
    print("| measure | agent-vm | baseline | ratio | target |")
    print("| --- | --- | --- | --- | --- |")
    print(row("start to ready / bare runner to SSH", med["cli_start"], med["bare_start"], "≤ 1.05"))
    print("\n".join(listing_rows(ls)))
    print(row(f"create, {BIG_HISTORY} commits / 1 commit", cr["big"], cr["small"], "≤ 1.5"))
    print(row("stop (ACPI) / bare QMP powerdown", med["cli_stop"], med["bare_stop"], "-"))
    if "detect" in med:
        print(
            f"| sshd listening → agent-vm notices (banner) | {med['detect']:.3f} s | - | - |"
            " ≤ 0.2 s |"
        )
    print(row("banner → login verified / one SSH login", med["verify"], med["login"], "-"))
    print()
    print("raw samples (s):", json.dumps({k: [round(x, 3) for x in v] for k, v in ss.items()}))


if __name__ == "__main__":
    main()
