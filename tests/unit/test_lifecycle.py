"""lifecycle: create/start/stop/destroy/update/reset with real git and
ssh-keygen, a fake `nix` (a script on PATH) whose "runner" is a fake QEMU,
and real processes and signals. No VM boots here (that is tests/e2e)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from agent_vm import (
    accel,
    gitops,
    lifecycle,
    params,
    procs,
    readiness,
    state,
    store,
    supervise,
    tools,
    unsaved,
)
from agent_vm.context import Context
from agent_vm.errors import (
    AlreadyExists,
    AlreadyRunning,
    BuildFailed,
    GuestFailed,
    InvalidInput,
    MissingTool,
    NotRunning,
    PortUnavailable,
    StartTimeout,
    UnsavedWork,
)
from agent_vm.events import Severity
from agent_vm.lifecycle import Changes, CreateOptions, StopTimeouts
from agent_vm.models import Network, Runtime, StageTiming, VmState
from agent_vm.names import vm_name
from agent_vm.paths import StateLayout, VmPaths
from plumbum import local
from unit_fakes import git, make_repo, run_module, spawn_exec

# A fake `nix build`: checks params.json, then makes <out-link>/bin/run-agent-vm
# whose behaviour FAKE_NIX_MODE picks: "hang" (a QEMU that never gets ready),
# "crash" (QEMU exits at once) or "fail" (the build fails).
FAKE_NIX = """#!{python}
import json, os, shlex, sys
args = sys.argv[1:]
out = args[args.index("--out-link") + 1]
params = os.environ["AGENT_VM_PARAMS"]
vm_dir = os.path.dirname(params)
json.load(open(params))
mode = os.environ.get("FAKE_NIX_MODE", "hang")
if mode == "fail":
    sys.stderr.write('@nix {{"action":"msg","level":0,"msg":"error: boom"}}\\n')
    sys.exit(1)
os.makedirs(out + "/bin", exist_ok=True)
runner = out + "/bin/run-agent-vm"
q = shlex.quote
if mode == "hang":
    body = (
        'echo "accel=$AGENT_VM_ACCEL"\\n'
        "echo $$ > " + q(vm_dir + "/fake-qemu.pid") + "\\n"
        "exec " + q(sys.executable) + " -c 'import time; time.sleep(60)' -pidfile "
        + q(vm_dir + "/qemu.pid") + "\\n"
    )
else:
    body = "echo 'qemu: could not open disk image' >&2\\nexit 1\\n"
with open(runner, "w") as f:
    f.write("#!/bin/sh\\n" + body)
os.chmod(runner, 0o755)
"""


@pytest.fixture
def fake_nix(tmp_path: Path) -> Iterator[Path]:
    bindir = tmp_path / "fake-nix-bin"
    bindir.mkdir()
    (bindir / "nix").write_text(FAKE_NIX.format(python=sys.executable))
    (bindir / "nix").chmod(0o755)
    with local.env(PATH=f"{bindir}:{os.environ['PATH']}"):
        yield bindir


@pytest.fixture
def ctx(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Context:
    repo = make_repo(tmp_path / "repo")
    monkeypatch.setenv("AGENT_VM_ACCEL", "tcg")  # no KVM probe
    monkeypatch.setenv("AGENT_VM_SHARE", "9p")
    return Context(layout=StateLayout(tmp_path / "state"), timeout=1.0, flake="path:/f", cwd=repo)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


SETTING_KEYS = {
    "memory": "memory_mib",
    "cores": "cores",
    "network": "network",
    "ephemeral": "ephemeral",
    "host": "host_address",
    "disk_size": "disk_size_mib",
}


def _split(kw: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Test shorthand (memory=…) into VmSettings fields and the other options."""
    settings = {SETTING_KEYS[k]: v for k, v in kw.items() if k in SETTING_KEYS}
    return settings, {k: v for k, v in kw.items() if k not in SETTING_KEYS}


def create(ctx: Context, **kw: Any) -> VmPaths:
    settings, rest = _split(kw)
    cfg = lifecycle.create(ctx, CreateOptions(settings=settings, **rest))
    return ctx.layout.vm(cfg.name)


def changes(**kw: Any) -> Changes:
    settings, rest = _split(kw)
    return Changes(settings=settings, **rest)


def events(vm: VmPaths) -> list[dict[str, Any]]:
    return [json.loads(x) for x in vm.events_log.read_text().splitlines()]


# --- create -----------------------------------------------------------------------------


def test_create_makes_everything(ctx: Context) -> None:
    vm = create(ctx, memory=1024, cores=1, network=Network.NONE, ephemeral=True)
    cfg = store.load_config(vm)
    assert cfg.branch == "main" and cfg.repo == str(ctx.cwd)
    assert cfg.commit == git(ctx.cwd, "rev-parse", "HEAD")
    assert cfg.workspace == str(vm.workspace) and cfg.workspace_owned
    assert (cfg.memory_mib, cfg.cores, cfg.network, cfg.ephemeral) == (1024, 1, "none", True)
    assert cfg.ssh_port >= 2222 and cfg.agent_port >= 8000 and cfg.ssh_port != cfg.agent_port
    assert not (cfg.ssh_port_pinned or cfg.agent_port_pinned)
    assert vm.name == f"main-{vm.name.rsplit('-', 1)[1]}"
    for p in (vm.client_key, vm.host_key, vm.known_hosts):
        assert p.stat().st_mode & 0o777 == 0o600
    for d in (ctx.layout.root, ctx.layout.vms, vm.dir, vm.ssh_dir):
        assert d.stat().st_mode & 0o777 == 0o700, d
    assert git(vm.workspace, "remote", "get-url", "origin") == str(ctx.cwd)
    assert unsaved.unsaved_work(ctx.layout, vm, cfg) == []
    assert [p.name for p in ctx.layout.vms.iterdir()] == [vm.name]  # no temp dir left


def test_create_twice_is_already_exists(ctx: Context) -> None:
    create(ctx)
    with pytest.raises(AlreadyExists) as exc:
        create(ctx)
    assert exc.value.exit_code == 4 and "already exists" in exc.value.message


def test_two_vms_never_share_a_port(ctx: Context) -> None:
    git(ctx.cwd, "branch", "other")
    a = store.load_config(create(ctx))
    b = store.load_config(create(ctx, branch="other"))
    assert {a.ssh_port, a.agent_port}.isdisjoint({b.ssh_port, b.agent_port})


def test_pinned_port_taken_leaves_nothing_behind(ctx: Context) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        busy = s.getsockname()[1]
        with pytest.raises(PortUnavailable):
            create(ctx, ssh_port=busy, pin=True)
    assert list(ctx.layout.vms.iterdir()) == []


def test_pinned_ports_are_used_exactly(ctx: Context) -> None:
    ssh_port, agent_port = free_port(), free_port()
    cfg = store.load_config(create(ctx, ssh_port=ssh_port, port=agent_port, pin=True))
    assert (cfg.ssh_port, cfg.agent_port) == (ssh_port, agent_port)
    assert cfg.ssh_port_pinned and cfg.agent_port_pinned


def test_interrupted_create_leaves_nothing(ctx: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(*args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(gitops, "make_workspace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        create(ctx)
    assert list(ctx.layout.vms.iterdir()) == []


def test_leftovers_of_a_killed_create_are_swept(ctx: Context) -> None:
    name = vm_name(str(ctx.cwd), "main")
    stale = ctx.layout.vms / f".{name}.creating-99999"
    (stale / "ssh").mkdir(parents=True)
    (stale / "ssh").chmod(0o500)
    create(ctx)
    assert not stale.exists()


def test_create_with_an_existing_workspace(ctx: Context, tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    vm = create(ctx, workspace=shared)
    cfg = store.load_config(vm)
    assert cfg.workspace == str(shared) and not cfg.workspace_owned
    assert not vm.workspace.exists()
    (shared / "dirty").write_text("not ours to judge")
    lifecycle.destroy(ctx, vm)  # not our workspace: no unsaved-work check, not deleted
    assert (shared / "dirty").exists() and not vm.dir.exists()


def test_concurrent_creates_get_distinct_ports(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    for b in ("a", "b", "c"):
        git(repo, "branch", b)
    state = tmp_path / "state"
    results: list[Any] = []

    def one(branch: str) -> None:
        results.append(run_module("--state-dir", str(state), "create", "-b", branch, cwd=repo))

    threads = [threading.Thread(target=one, args=(b,)) for b in ("a", "b", "c")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r.code == 0 for r in results), [r.err for r in results]
    layout = StateLayout(state)
    cfgs = [store.load_config(layout.vm(n)) for n in store.vm_names(layout)]
    ports = [p for c in cfgs for p in (c.ssh_port, c.agent_port)]
    assert len(cfgs) == 3 and len(set(ports)) == 6, ports


# --- start ---------------------------------------------------------------------------------


def test_build_failure_leaves_the_vm_stopped(ctx: Context, fake_nix: Path) -> None:
    vm = create(ctx)
    with local.env(FAKE_NIX_MODE="fail"), pytest.raises(BuildFailed) as exc:
        lifecycle.start(ctx, vm)
    assert exc.value.detail == "error: boom"
    assert store.load_runtime(vm).state is VmState.STOPPED
    assert vm.build_log.exists()


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("AGENT_VM_ACCEL", "fast", "AGENT_VM_ACCEL must be kvm, tcg or auto, not 'fast'"),
        ("AGENT_VM_ACCEL", "KVM", "AGENT_VM_ACCEL must be kvm, tcg or auto, not 'KVM'"),
        ("AGENT_VM_SHARE", "nfs", "AGENT_VM_SHARE must be 9p or virtiofs, not 'nfs'"),
    ],
)
def test_a_bad_override_is_refused_before_anything_is_built(
    ctx: Context,
    fake_nix: Path,
    monkeypatch: pytest.MonkeyPatch,
    variable: str,
    value: str,
    message: str,
) -> None:
    """An invalid AGENT_VM_ACCEL was silently ignored (a KVM probe ran)."""
    vm = create(ctx)
    monkeypatch.setenv(variable, value)
    with pytest.raises(InvalidInput) as exc:
        lifecycle.start(ctx, vm)
    assert exc.value.message == message
    assert not vm.runner_link.exists() and not vm.params.exists()  # nix never ran
    assert store.load_runtime(vm).state is VmState.STOPPED


def test_auto_accel_and_no_override_are_valid(
    ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    from agent_vm import preflight

    for value in ("auto", "kvm", "tcg", ""):
        monkeypatch.setenv("AGENT_VM_ACCEL", value)
        preflight.check_start()
    monkeypatch.delenv("AGENT_VM_ACCEL")
    preflight.check_start()


def test_a_missing_ssh_is_found_before_building_or_booting(ctx: Context, fake_nix: Path) -> None:
    """ssh was first needed by the readiness wait, after a whole boot."""
    vm = create(ctx)
    with local.env(PATH=str(fake_nix)), pytest.raises(MissingTool) as exc:
        lifecycle.start(ctx, vm)
    assert exc.value.message == "'ssh' was not found on PATH"
    assert not vm.runner_link.exists() and not vm.params.exists()
    assert store.load_runtime(vm).state is VmState.STOPPED


def test_start_writes_the_contract_params(ctx: Context, fake_nix: Path) -> None:
    vm = create(ctx)
    cfg = store.load_config(vm)
    with local.env(FAKE_NIX_MODE="fail"), pytest.raises(BuildFailed):
        lifecycle.start(ctx, vm)
    p = json.loads(vm.params.read_text())
    assert p["stateDir"] == str(vm.dir) and p["name"] == vm.name
    assert (p["sshPort"], p["agentPort"], p["guestAgentPort"]) == (
        cfg.ssh_port,
        cfg.agent_port,
        8000,
    )
    assert p["workspace"]["hostPath"] == cfg.workspace and p["share"] == "9p"
    # The client key travels by fw_cfg, not in this file.
    assert "sshAuthorizedKeys" not in p and "branch" not in p
    if os.getuid() == 0:
        assert p["user"] == {"name": "dev", "uid": 1000, "gid": 1000}
        assert p["workspace"]["securityModel"] == "mapped-xattr"
    else:
        assert p["user"]["uid"] == os.getuid() and p["workspace"]["securityModel"] == "none"
    # No secret in params.json.
    assert "PRIVATE KEY" not in vm.params.read_text()
    assert vm.params.stat().st_mode & 0o777 == 0o600


def test_start_timeout_leaves_no_qemu_behind(ctx: Context, fake_nix: Path) -> None:
    vm = create(ctx)
    with pytest.raises(StartTimeout) as exc:
        lifecycle.start(ctx, vm)
    assert exc.value.exit_code == 7
    assert "stage 'qemu' timed out" in exc.value.message
    assert exc.value.hint is not None and "likely cause" in exc.value.hint
    pid = int((vm.dir / "fake-qemu.pid").read_text())
    assert procs.wait_gone(pid, 5)
    rt = store.load_runtime(vm)
    assert rt.state is VmState.FAILED and rt.pid is None and rt.reason
    assert "accel=tcg" in vm.runner_log.read_text()
    assert [s.stage for s in rt.stages] == ["build"]


def test_qemu_exiting_while_starting_is_guest_failed(ctx: Context, fake_nix: Path) -> None:
    vm = create(ctx)
    with local.env(FAKE_NIX_MODE="crash"), pytest.raises(GuestFailed) as exc:
        lifecycle.start(ctx, vm)
    assert exc.value.message == "QEMU exited with code 1 while the VM was starting"
    assert exc.value.detail is not None and "could not open disk image" in exc.value.detail
    assert store.load_runtime(vm).state is VmState.FAILED


def test_start_recovers_a_crashed_vm(ctx: Context, fake_nix: Path) -> None:
    vm = create(ctx)
    store.save(vm.runtime, Runtime(state=VmState.RUNNING, pid=2**22 + 1, pid_start_time=1))
    vm.qmp_socket.write_text("")  # left behind by the dead QEMU
    with local.env(FAKE_NIX_MODE="fail"), pytest.raises(BuildFailed):
        lifecycle.start(ctx, vm)
    assert any("recovering VM" in e["message"] for e in events(vm))
    assert not vm.qmp_socket.exists()


def test_start_moves_a_port_a_foreign_process_took(ctx: Context, fake_nix: Path) -> None:
    vm = create(ctx, ssh_port=free_port())
    cfg = store.load_config(vm)
    with socket.socket() as s:
        s.bind(("127.0.0.1", cfg.ssh_port))
        s.listen()
        with local.env(FAKE_NIX_MODE="fail"), pytest.raises(BuildFailed):
            lifecycle.start(ctx, vm)
    new = store.load_config(vm)
    assert new.ssh_port not in (cfg.ssh_port, new.agent_port)
    assert json.loads(vm.params.read_text())["sshPort"] == new.ssh_port
    assert any("was taken by another process" in e["message"] for e in events(vm))


def test_start_refuses_a_pinned_port_a_foreign_process_took(ctx: Context, fake_nix: Path) -> None:
    vm = create(ctx, ssh_port=free_port(), port=free_port(), pin=True)
    cfg = store.load_config(vm)
    with socket.socket() as s:
        s.bind(("127.0.0.1", cfg.agent_port))
        s.listen()
        with pytest.raises(PortUnavailable, match="in use by another process"):
            lifecycle.start(ctx, vm)
    assert store.load_config(vm).agent_port == cfg.agent_port


# --- a "running" VM: a live process naming the VM dir -------------------------------------


@pytest.fixture
def running(ctx: Context) -> Iterator[tuple[VmPaths, subprocess.Popen[bytes]]]:
    vm = create(ctx)
    proc = spawn_exec([sys.executable, "-c", "import time; time.sleep(60)", f"{vm.dir}/qemu.pid"])
    store.save(
        vm.runtime,
        Runtime(state=VmState.RUNNING, pid=proc.pid, pid_start_time=procs.start_time(proc.pid)),
    )
    yield vm, proc
    proc.kill()
    proc.wait()


def test_supervise_tells_systemd_ready_then_stopping(
    ctx: Context,
    running: tuple[VmPaths, subprocess.Popen[bytes]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`up --foreground` under a Type=notify unit: READY once supervising, and
    STOPPING when SIGTERM (KeyboardInterrupt here) starts the powerdown."""
    vm, proc = running
    rt = store.load_runtime(vm)
    store.save(vm.runtime, rt.model_copy(update={"ssh_port": 2345, "agent_port": 8123}))
    notify = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind(str(notify))
        s.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", str(notify))
        monkeypatch.setattr(supervise, "POLL", 0.02)
        stopped: list[VmPaths] = []
        monkeypatch.setattr(lifecycle, "stop", lambda ctx, vm, t=None: stopped.append(vm))
        sleeps = 0

        def interrupt_soon(seconds: float) -> None:
            nonlocal sleeps
            sleeps += 1
            if sleeps == 3:
                raise KeyboardInterrupt

        monkeypatch.setattr(supervise.time, "sleep", interrupt_soon)
        supervise.supervise(ctx, vm)
        assert s.recv(4096).decode().splitlines() == [
            "READY=1",
            f"MAINPID={os.getpid()}",
            f"STATUS=VM {vm.name} running (ssh port 2345, agent port 8123)",
        ]
        assert s.recv(4096).decode().splitlines() == [
            "STOPPING=1",
            f"STATUS=powering VM {vm.name} down",
        ]
    assert stopped == [vm]
    assert proc.poll() is None  # stop() (faked here) does the powering down


def test_running_vm_refuses_start_and_reset(
    ctx: Context, running: tuple[VmPaths, subprocess.Popen[bytes]]
) -> None:
    vm, _ = running
    with pytest.raises(AlreadyRunning):
        lifecycle.start(ctx, vm)
    with pytest.raises(AlreadyRunning):
        lifecycle.reset(ctx, vm)


def test_stop_without_qmp_escalates_to_sigterm(
    ctx: Context, running: tuple[VmPaths, subprocess.Popen[bytes]]
) -> None:
    vm, proc = running
    vm.console_socket.write_text("")
    rt = lifecycle.stop(ctx, vm, StopTimeouts(powerdown=0.1, term=5, kill=5))
    assert rt.state is VmState.STOPPED
    # procs.reap collected the exit status, so Popen only sees that it is gone.
    proc.wait(timeout=5)
    assert not vm.console_socket.exists()
    kinds = [e["kind"] for e in events(vm)]
    assert "process.signalled" in kinds and kinds[-1] == "vm.stopped"


def test_stop_uses_qmp_powerdown_first(
    ctx: Context,
    running: tuple[VmPaths, subprocess.Popen[bytes]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A fake QMP server: on system_powerdown the 'guest' exits by itself."""
    vm, proc = running
    commands: list[str] = []
    srv = socket.socket(socket.AF_UNIX)
    # Bound by a relative name, as the runner does: a socket address holds
    # 107 bytes, and a long TMPDIR (a Nix build's) would not fit.
    with monkeypatch.context() as m:
        m.chdir(vm.dir)
        srv.bind(vm.qmp_socket.name)
    srv.listen()

    def serve() -> None:
        conn, _ = srv.accept()
        with conn, conn.makefile("rwb") as f:
            f.write(b'{"QMP": {"version": {}, "capabilities": []}}\n')
            f.flush()
            for line in f:
                cmd = json.loads(line)["execute"]
                commands.append(cmd)
                f.write(b'{"return": {}}\n')
                f.flush()
                if cmd == "system_powerdown":
                    proc.terminate()
                    return

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    lifecycle.stop(ctx, vm, StopTimeouts(powerdown=10))
    t.join(5)
    srv.close()
    assert commands == ["qmp_capabilities", "system_powerdown"]
    assert not any(e["kind"] == "process.signalled" for e in events(vm))
    assert store.load_runtime(vm).state is VmState.STOPPED


def test_stop_never_signals_a_pid_that_is_not_ours(ctx: Context) -> None:
    vm = create(ctx)
    stranger = spawn_exec(["sleep", "60"])
    try:
        store.save(
            vm.runtime,
            Runtime(
                state=VmState.RUNNING,
                pid=stranger.pid,
                pid_start_time=procs.start_time(stranger.pid),
            ),
        )
        rt = lifecycle.stop(ctx, vm, StopTimeouts(powerdown=0.1, term=0.1, kill=0.1))
        assert rt.state is VmState.STOPPED
        assert stranger.poll() is None  # untouched
        assert any("its QEMU is gone" in e["message"] for e in events(vm))
    finally:
        stranger.kill()
        stranger.wait()


def test_stop_of_a_stopped_vm_is_not_running(ctx: Context) -> None:
    vm = create(ctx)
    with pytest.raises(NotRunning):
        lifecycle.stop(ctx, vm)


def test_ephemeral_disk_is_dropped_at_stop(
    ctx: Context, running: tuple[VmPaths, subprocess.Popen[bytes]]
) -> None:
    vm, _ = running
    lifecycle.update(ctx, vm, changes(ephemeral=True))
    vm.disk.write_text("guest state")
    lifecycle.stop(ctx, vm, StopTimeouts(powerdown=0.1))
    assert not vm.disk.exists()


# --- destroy, update, reset --------------------------------------------------------------------


def test_destroy_refuses_unsaved_work_then_force(ctx: Context) -> None:
    vm = create(ctx)
    (vm.workspace / "work").write_text("precious")
    with pytest.raises(UnsavedWork) as exc:
        lifecycle.destroy(ctx, vm)
    assert exc.value.exit_code == 13
    assert exc.value.message.endswith("workspace has uncommitted changes to 1 file(s)")
    assert vm.dir.exists()
    lifecycle.destroy(ctx, vm, force=True)
    assert not vm.dir.exists()


def test_destroy_stops_a_running_vm(
    ctx: Context, running: tuple[VmPaths, subprocess.Popen[bytes]]
) -> None:
    vm, proc = running
    lifecycle.destroy(ctx, vm)
    proc.wait(timeout=30)
    assert not vm.dir.exists()
    assert not procs.is_ours(proc.pid, procs.start_time(proc.pid), vm.dir)


def test_update_changes_settings_and_keeps_disk_and_workspace(ctx: Context) -> None:
    vm = create(ctx)
    vm.disk.write_text("disk")
    (vm.workspace / "f").write_text("ws")
    new_ssh = free_port()
    cfg, restart = lifecycle.update(
        ctx, vm, changes(memory=4096, cores=4, ssh_port=new_ssh, network=Network.NONE)
    )
    assert not restart
    assert (cfg.memory_mib, cfg.cores, cfg.ssh_port, cfg.network) == (4096, 4, new_ssh, "none")
    assert cfg.ssh_port_pinned and store.load_config(vm) == cfg
    assert vm.disk.read_text() == "disk" and (vm.workspace / "f").read_text() == "ws"


def test_a_disk_grows_but_never_shrinks(ctx: Context) -> None:
    """The runner grows the disk at the next start (tests/nix); shrinking an
    existing one would cut the guest's file system: refused."""
    vm = create(ctx, disk_size=4096)
    cfg, _ = lifecycle.update(ctx, vm, changes(disk_size=2048))  # no disk yet: any size
    assert cfg.disk_size_mib == 2048
    vm.disk.write_text("disk")
    cfg, _ = lifecycle.update(ctx, vm, changes(disk_size=8192))
    assert cfg.disk_size_mib == 8192
    with pytest.raises(InvalidInput) as exc:
        lifecycle.update(ctx, vm, changes(disk_size=4096))
    assert exc.value.message == (
        f"--disk-size 4096 is smaller than VM {vm.name}'s disk (8192 MiB): a disk cannot shrink"
    )
    assert exc.value.hint is not None and "agent-vm reset" in exc.value.hint
    assert store.load_config(vm).disk_size_mib == 8192 and vm.disk.read_text() == "disk"


def test_update_validates(ctx: Context) -> None:
    git(ctx.cwd, "branch", "other")
    vm = create(ctx)
    other = store.load_config(create(ctx, branch="other"))
    with pytest.raises(InvalidInput):
        lifecycle.update(ctx, vm, changes(memory=1))
    with pytest.raises(InvalidInput):
        lifecycle.update(ctx, vm, changes(host="example.com"))
    with pytest.raises(PortUnavailable, match="another VM"):
        lifecycle.update(ctx, vm, changes(port=other.agent_port))


def test_update_of_a_running_vm_needs_a_restart(
    ctx: Context, running: tuple[VmPaths, subprocess.Popen[bytes]]
) -> None:
    vm, _ = running
    assert lifecycle.update(ctx, vm, changes(cores=3))[1] is True


def test_updating_to_the_current_settings_is_no_change(
    ctx: Context, running: tuple[VmPaths, subprocess.Popen[bytes]]
) -> None:
    """`up` hands update a declaration's every setting at each start: what
    already holds is no change, needs no restart and records no event."""
    vm, _ = running
    before = store.load_config(vm)
    lifecycle.update(ctx, vm, changes(ssh_port=before.ssh_port))  # pins it: a change
    pinned = store.load_config(vm)
    assert pinned.ssh_port_pinned
    n_events = len(events(vm))
    cfg, restart = lifecycle.update(
        ctx,
        vm,
        changes(
            memory=pinned.memory_mib,
            cores=pinned.cores,
            host=pinned.host_address,
            network=pinned.network,
            ephemeral=pinned.ephemeral,
            ssh_port=pinned.ssh_port,
        ),
    )
    assert (cfg, restart) == (pinned, False)
    assert len(events(vm)) == n_events


def test_reset_deletes_only_the_disk(ctx: Context) -> None:
    vm = create(ctx)
    assert lifecycle.reset(ctx, vm) is False
    vm.disk.write_text("guest state")
    (vm.workspace / "f").write_text("ws")
    assert lifecycle.reset(ctx, vm) is True
    assert not vm.disk.exists() and (vm.workspace / "f").exists() and vm.config.exists()


def test_workspace_share_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENT_VM_SHARE", "virtiofs")
    assert params.workspace_share() == "virtiofs"
    monkeypatch.setenv("AGENT_VM_SHARE", "9p")
    assert params.workspace_share() == "9p"
    monkeypatch.setenv("AGENT_VM_SHARE", "nfs")
    with pytest.raises(InvalidInput, match="AGENT_VM_SHARE must be 9p or virtiofs"):
        params.workspace_share()
    monkeypatch.delenv("AGENT_VM_SHARE")
    with local.env(PATH="/nonexistent"):
        assert params.workspace_share() == "9p"


def test_lock_makes_a_second_command_busy(ctx: Context) -> None:
    vm = create(ctx)
    with ctx.lock(vm.name), pytest.raises(Exception, match="busy") as exc:
        lifecycle.reset(ctx, vm)
    assert getattr(exc.value, "exit_code", None) == 14
    # Released: it works again.
    deadline = time.monotonic() + 1
    assert lifecycle.reset(ctx, vm) is False and time.monotonic() < deadline


# --- issue 12: supervision, interrupts, killed starters ----------------------------------


def test_a_deliberate_stop_ends_supervision_successfully(
    ctx: Context,
    running: tuple[VmPaths, subprocess.Popen[bytes]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`agent-vm stop` of a VM a systemd unit supervises: the unit's
    `up --foreground` must end with success, or Restart=on-failure would
    start the VM again."""
    vm, proc = running
    monkeypatch.setattr(supervise, "POLL", 0.02)
    stopper = threading.Thread(
        target=lambda: lifecycle.stop(ctx, vm, StopTimeouts(powerdown=0.1, term=5, kill=5))
    )
    stopper.start()
    supervise.supervise(ctx, vm)  # returns: no GuestFailed
    stopper.join()
    assert store.load_runtime(vm).state is VmState.STOPPED
    assert proc.wait(timeout=5) is not None


def test_qemu_dying_under_supervision_is_a_failure(
    ctx: Context,
    running: tuple[VmPaths, subprocess.Popen[bytes]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    vm, proc = running
    monkeypatch.setattr(supervise, "POLL", 0.02)
    proc.kill()
    proc.wait()
    with pytest.raises(GuestFailed) as exc:
        supervise.supervise(ctx, vm)
    assert exc.value.exit_code == 15
    rt = store.load_runtime(vm)
    assert rt.state is VmState.FAILED and rt.reason == "QEMU exited while the VM was supervised"


def test_an_interrupt_right_after_the_spawn_stops_qemu(
    ctx: Context, fake_nix: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C (or SIGTERM) between spawning the runner and the readiness
    wait: the VM is recorded stopped, and its QEMU really is gone."""
    vm = create(ctx)
    real_spawn, real_start_time = tools.spawn, procs.start_time
    spawned: list[subprocess.Popen[bytes]] = []

    def spawn(*args: Any, **kwargs: Any) -> subprocess.Popen[bytes]:
        spawned.append(real_spawn(*args, **kwargs))
        return spawned[-1]

    interrupted: list[int] = []

    def interrupted_once_spawned(pid: int) -> int | None:
        if spawned and pid == spawned[0].pid and not interrupted:  # right after the spawn
            interrupted.append(pid)
            raise KeyboardInterrupt
        return real_start_time(pid)

    monkeypatch.setattr(tools, "spawn", spawn)
    monkeypatch.setattr(procs, "start_time", interrupted_once_spawned)
    with pytest.raises(KeyboardInterrupt):
        lifecycle.start(ctx, vm)
    assert len(spawned) == 1
    assert spawned[0].wait(timeout=5) is not None, "the runner was left running"
    rt = store.load_runtime(vm)
    assert rt.state is VmState.STOPPED and rt.pid is None


def test_a_start_whose_agent_vm_was_killed_is_recovered(ctx: Context, fake_nix: Path) -> None:
    """agent-vm killed with SIGKILL while starting leaves QEMU running and the
    record "starting"; status says failed and the next start recovers it
    (stopping the orphaned QEMU) instead of saying "already starting"."""
    vm = create(ctx)
    orphan = spawn_exec([sys.executable, "-c", "import time; time.sleep(60)", str(vm.dir)])
    try:
        store.save(
            vm.runtime,
            Runtime(
                state=VmState.STARTING,
                pid=orphan.pid,
                pid_start_time=procs.start_time(orphan.pid),
                starter_pid=2**22 + 7,
            ),
        )
        eff, reason = state.effective(store.load_runtime(vm), vm.dir, ctx.layout.vm_lock(vm.name))
        assert eff is VmState.FAILED and reason and "starting it is gone" in reason
        with local.env(FAKE_NIX_MODE="fail"), pytest.raises(BuildFailed):
            lifecycle.start(ctx, vm)
        assert orphan.wait(timeout=5) is not None
        assert any("recovering VM" in e["message"] for e in events(vm))
        assert store.load_runtime(vm).state is VmState.STOPPED
    finally:
        orphan.kill()
        orphan.wait()


# --- one boot per log; KVM that hangs ---------------------------------------------------


def test_each_start_logs_only_its_own_boot(ctx: Context, fake_nix: Path) -> None:
    """Error messages quote runner.log/serial.log: never the previous run's,
    which stays as .1 for 'agent-vm logs --previous'."""
    vm = create(ctx)
    vm.serial_log.write_text("previous boot: reboot: Power down\n")
    for _ in range(2):
        with local.env(FAKE_NIX_MODE="crash"), pytest.raises(GuestFailed) as exc:
            lifecycle.start(ctx, vm)
        # This fake QEMU writes no serial log.
        assert not vm.serial_log.exists()
        assert (vm.dir / "serial.log.1").read_text() == "previous boot: reboot: Power down\n"
    assert exc.value.detail == "qemu: could not open disk image"
    assert vm.runner_log.read_text() == "qemu: could not open disk image\n"
    assert (vm.dir / "runner.log.1").read_text() == "qemu: could not open disk image\n"


def kvm_that_hangs(monkeypatch: pytest.MonkeyPatch, forced: bool) -> list[str]:
    """The probe said KVM works, yet the guest is silent under it: wait_ready
    raises KvmSilent for a kvm boot and succeeds for a tcg one."""
    boots: list[str] = []
    monkeypatch.setattr(
        accel, "choose", lambda layout, runner: accel.Choice("kvm", "probed", forced=forced)
    )

    def wait_ready(probe: readiness.Probe) -> list[StageTiming]:
        boots.append(probe.accel)
        if probe.accel == "kvm":
            raise readiness.KvmSilent("VM x printed nothing on its console for 10s under KVM")
        return [StageTiming(stage=s, seconds=0.1, ok=True) for s in ("qemu", "ssh", "agent")]

    monkeypatch.setattr(readiness, "wait_ready", wait_ready)
    return boots


def test_a_silent_kvm_boot_falls_back_to_tcg(
    ctx: Context, fake_nix: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AGENT_VM_ACCEL")
    boots = kvm_that_hangs(monkeypatch, forced=False)
    vm = create(ctx)
    _, rt = lifecycle.start(ctx, vm)
    try:
        assert boots == ["kvm", "tcg"]
        assert rt.state is VmState.RUNNING
        # Two runners ran, one after the other; the first is gone.
        assert vm.runner_log.read_text().splitlines() == ["accel=kvm", "accel=tcg"]
        fallback = [e for e in events(vm) if e["kind"] == "accel.fallback"]
        assert len(fallback) == 1 and fallback[0]["severity"] == Severity.WARNING
        assert "starting again under TCG" in fallback[0]["message"]
        # Later starts this boot go straight to TCG.
        cache = store.load(ctx.layout.root / "kvm-probe.json", accel.KvmProbe)
        assert not cache.usable and "printed nothing" in cache.detail
    finally:
        lifecycle.stop(ctx, vm, StopTimeouts(powerdown=0.1, term=5, kill=5))


def test_forced_kvm_does_not_fall_back(
    ctx: Context, fake_nix: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    boots = kvm_that_hangs(monkeypatch, forced=True)
    vm = create(ctx)
    with pytest.raises(GuestFailed, match="printed nothing on its console"):
        lifecycle.start(ctx, vm)
    assert boots == ["kvm"]
    pid = int((vm.dir / "fake-qemu.pid").read_text())
    assert procs.wait_gone(pid, 5)
    assert store.load_runtime(vm).state is VmState.FAILED
