"""The VM lifecycle: create, start, stop, destroy, update, reset.

Every operation holds the VM's lock for its whole length, so two terminals
cannot interleave on one VM; port allocation additionally holds the state
directory's ports lock until the ports are written down.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shutil
import signal
import stat
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from . import (
    accel,
    gitops,
    keys,
    nixbuild,
    ownership,
    ports,
    procs,
    qmp,
    readiness,
    sdnotify,
    store,
    tools,
)
from .errors import (
    AlreadyExists,
    AlreadyRunning,
    BuildFailed,
    CorruptState,
    GuestFailed,
    InvalidInput,
    MissingTool,
    NotFound,
    NotRunning,
    StopFailed,
    UnsavedWork,
)
from .events import REPORTER, EventKind, Severity, emit, warn
from .fsutil import atomic_write, ensure_private_dir, file_lock
from .models import (
    CORES_RANGE,
    DISK_MIB_RANGE,
    MEMORY_MIB_RANGE,
    PORT_RANGE,
    GuestUser,
    Network,
    Runtime,
    StageTiming,
    VmConfig,
    VmParams,
    VmState,
    WorkspaceShare,
    check_host,
)
from .names import vm_name
from .paths import StateLayout, VmPaths
from .state import alive, effective, transition

SSH_PORT_START = 2222
AGENT_PORT_START = 8000
GUEST_AGENT_PORT = 8000


@dataclass
class Context:
    layout: StateLayout
    timeout: float = 120.0
    flake: str | None = None
    cwd: Path = field(default_factory=Path.cwd)

    def lock(self, name: str) -> contextlib.AbstractContextManager[None]:
        ensure_private_dir(self.layout.root)
        return file_lock(self.layout.vm_lock(name), f"VM {name}")

    def ports_lock(self) -> contextlib.AbstractContextManager[None]:
        ensure_private_dir(self.layout.root)
        return file_lock(self.layout.ports_lock, "port allocation", wait=30.0)


@dataclass
class CreateOptions:
    branch: str | None = None
    host: str = "127.0.0.1"
    port: int | None = None
    ssh_port: int | None = None
    memory: int = 2048
    cores: int = 2
    disk_size: int = 8192
    ephemeral: bool = False
    network: Network = Network.OPEN
    config: Path | None = None
    workspace: Path | None = None
    pin: bool = False


def _attach(ctx: Context, name: str) -> None:
    REPORTER.attach(name, ctx.layout.vm(name).events_log)


def taken_ports(layout: StateLayout, exclude: str | None = None) -> set[int]:
    """Every port any other VM has reserved or is using."""
    used: set[int] = set()
    for name in store.vm_names(layout):
        if name == exclude:
            continue
        vm = layout.vm(name)
        with contextlib.suppress(CorruptState, NotFound):
            cfg = store.load_config(vm)
            used |= {cfg.ssh_port, cfg.agent_port}
        with contextlib.suppress(CorruptState, NotFound):
            rt = store.load_runtime(vm)
            used |= {p for p in (rt.ssh_port, rt.agent_port) if p is not None}
    return used


def _validate_options(opts: CreateOptions) -> None:
    # The models validate too; these messages name the flag the user typed.
    for flag, value, (lo, hi) in (
        ("--port", opts.port, PORT_RANGE),
        ("--ssh-port", opts.ssh_port, PORT_RANGE),
        ("--memory", opts.memory, MEMORY_MIB_RANGE),
        ("--cores", opts.cores, CORES_RANGE),
        ("--disk-size", opts.disk_size, DISK_MIB_RANGE),
    ):
        if value is not None and not lo <= value <= hi:
            raise InvalidInput(f"{flag} {value} is out of range ({lo}-{hi})")
    try:
        check_host(opts.host)
    except ValueError as exc:
        raise InvalidInput(f"--host: {exc}") from None
    if opts.config is not None and not opts.config.is_file():
        raise InvalidInput(f"--config {opts.config} is not a file")
    if opts.workspace is not None and not opts.workspace.is_dir():
        raise InvalidInput(f"--workspace {opts.workspace} is not a directory")


def create(ctx: Context, opts: CreateOptions) -> VmConfig:
    _validate_options(opts)
    repo = gitops.repo_root(ctx.cwd)
    checkout = gitops.resolve(repo, opts.branch)
    name = vm_name(str(repo), checkout.branch)
    vm = ctx.layout.vm(name)
    if not ipaddress.ip_address(opts.host).is_loopback:
        warn(f"binding the VM's ports to {opts.host} exposes SSH and the agent to the network")
    ensure_private_dir(ctx.layout.vms)
    with ctx.lock(name):
        if vm.dir.exists():
            raise AlreadyExists(
                f"a VM for branch {checkout.branch!r} already exists ({name})",
                hint="use 'agent-vm start' or 'agent-vm update', or destroy it first",
            )
        # Leftovers of a create that was killed: we hold the lock, so nobody
        # else is making them.
        for stale in ctx.layout.vms.glob(f".{name}.creating-*"):
            shutil.rmtree(stale, onerror=_force_remove)
        tmp = VmPaths(ctx.layout.vms / f".{name}.creating-{os.getpid()}")
        try:
            ensure_private_dir(tmp.dir)
            keys.generate(tmp, name)
            emit(EventKind.SSH_KEY_GENERATED, "generated SSH client and host keys", vm=name)
            if opts.workspace is not None:
                workspace, owned = opts.workspace.resolve(), False
            else:
                gitops.make_workspace(checkout, tmp.workspace)
                workspace, owned = vm.workspace, True
                emit(
                    EventKind.WORKSPACE_CLONED,
                    f"workspace cloned from {repo} at {checkout.commit[:12]}",
                    vm=name,
                )
            with ctx.ports_lock():
                taken = taken_ports(ctx.layout)
                pin_ssh = opts.ssh_port if opts.pin else None
                pin_agent = opts.port if opts.pin else None
                ssh_port = _pick(opts.host, pin_ssh, opts.ssh_port or SSH_PORT_START, taken, "SSH")
                agent_port = _pick(
                    opts.host, pin_agent, opts.port or AGENT_PORT_START, taken | {ssh_port}, "agent"
                )
                cfg = VmConfig(
                    name=name,
                    branch=checkout.branch,
                    repo=str(repo),
                    commit=checkout.commit,
                    workspace=str(workspace),
                    workspace_owned=owned,
                    host_address=opts.host,
                    ssh_port=ssh_port,
                    agent_port=agent_port,
                    ssh_port_pinned=pin_ssh is not None,
                    agent_port_pinned=pin_agent is not None,
                    memory_mib=opts.memory,
                    cores=opts.cores,
                    disk_size_mib=opts.disk_size,
                    ephemeral=opts.ephemeral,
                    network=opts.network,
                    user_module=str(opts.config.resolve()) if opts.config else None,
                    created_at=datetime.now(UTC),
                )
                store.save(tmp.config, cfg)
                os.rename(tmp.dir, vm.dir)
        except BaseException:
            shutil.rmtree(tmp.dir, onerror=_force_remove)
            raise
    _attach(ctx, name)
    for what, port in (("SSH", cfg.ssh_port), ("agent", cfg.agent_port)):
        emit(EventKind.PORT_ALLOCATED, f"{what} port {port}", vm=name, port=port, purpose=what)
    emit(
        EventKind.VM_CREATED,
        f"created VM {name} for branch {cfg.branch!r}",
        severity=Severity.NOTICE,
        vm=name,
    )
    return cfg


def _pick(host: str, wanted: int | None, start: int, taken: set[int], what: str) -> int:
    """Exactly `wanted` if the user pinned it, else the first free from `start`."""
    if wanted is not None:
        return ports.require(host, wanted, taken, what)
    return ports.allocate(host, start, taken)


def _force_remove(func: object, path: str, exc_info: object) -> None:
    """rmtree helper: make read-only directories writable and retry."""
    parent = os.path.dirname(path)
    with contextlib.suppress(OSError):
        os.chmod(parent, stat.S_IRWXU)
        if os.path.isdir(path) and not os.path.islink(path):
            os.chmod(path, stat.S_IRWXU)
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.unlink(path)


SHARE_ENV = "AGENT_VM_SHARE"


def workspace_share() -> Literal["9p", "virtiofs"]:
    """virtiofs when a virtiofsd is on PATH (the Nix package puts one there),
    9p otherwise; $AGENT_VM_SHARE (9p or virtiofs) overrides."""
    forced = os.environ.get(SHARE_ENV)
    if forced == "9p":
        return "9p"
    if forced == "virtiofs":
        return "virtiofs"
    if forced:
        raise InvalidInput(f"{SHARE_ENV} must be 9p or virtiofs, not {forced!r}")
    return "virtiofs" if tools.have("virtiofsd") else "9p"


def params_for(vm: VmPaths, cfg: VmConfig, ssh_port: int, agent_port: int) -> VmParams:
    mapping = ownership.for_host_user()
    return VmParams(
        name=cfg.name,
        branch=cfg.branch,
        state_dir=str(vm.dir),
        host_address=cfg.host_address,
        ssh_port=ssh_port,
        agent_port=agent_port,
        guest_agent_port=GUEST_AGENT_PORT,
        memory_mib=cfg.memory_mib,
        cores=cfg.cores,
        disk_size_mib=cfg.disk_size_mib,
        network=cfg.network,
        share=workspace_share(),
        workspace=WorkspaceShare(host_path=cfg.workspace, security_model=mapping.security_model),
        user=GuestUser(uid=mapping.uid, gid=mapping.gid),
        ssh_authorized_keys=[keys.public_key(vm.client_pubkey)],
        user_module=cfg.user_module,
    )


def _ensure_ports(ctx: Context, vm: VmPaths, cfg: VmConfig) -> VmConfig:
    """Re-check the reserved ports right before QEMU binds them."""
    with ctx.ports_lock():
        taken = taken_ports(ctx.layout, exclude=cfg.name)
        changed: dict[str, int] = {}
        for what, field_name, pinned in (
            ("SSH", "ssh_port", cfg.ssh_port_pinned),
            ("agent", "agent_port", cfg.agent_port_pinned),
        ):
            port = getattr(cfg, field_name)
            others = taken | {v for k, v in changed.items() if k != field_name}
            if port not in others and ports.is_free(cfg.host_address, port):
                continue
            if pinned:
                ports.require(cfg.host_address, port, others, what)
            new = ports.allocate(cfg.host_address, port + 1, others | {port})
            warn(
                f"{what} port {port} was taken by another process; using {new} instead", vm=cfg.name
            )
            changed[field_name] = new
        if changed:
            cfg = cfg.model_copy(update=changed)
            store.save(vm.config, cfg)
    return cfg


def _cleanup_runtime_files(vm: VmPaths, cfg: VmConfig | None) -> None:
    for p in (*vm.sockets, vm.pidfile):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
    if cfg is not None and cfg.ephemeral:
        with contextlib.suppress(FileNotFoundError):
            vm.disk.unlink()


def _terminate(vm: VmPaths, pid: int, start: int, grace_term: float = 10.0) -> bool:
    """SIGTERM then SIGKILL our QEMU; True once it is gone."""
    for sig, wait in ((signal.SIGTERM, grace_term), (signal.SIGKILL, 5.0)):
        if not procs.signal_if_ours(pid, start, vm.dir, sig):
            procs.reap(pid)
            return True
        emit(
            EventKind.PROCESS_SIGNALLED,
            f"sent {sig.name} to QEMU (pid {pid})",
            vm=vm.name,
            pid=pid,
            signal=sig.name,
        )
        if procs.wait_gone(pid, wait):
            return True
    return False


def start(ctx: Context, vm: VmPaths) -> tuple[VmConfig, Runtime]:
    with ctx.lock(vm.name):
        _attach(ctx, vm.name)
        cfg = store.load_config(vm)
        rt = store.load_runtime(vm)
        if rt.state in (VmState.STARTING, VmState.RUNNING, VmState.STOPPING) and alive(rt, vm.dir):
            raise AlreadyRunning(
                f"VM {vm.name} is already {rt.state.value}", hint="'agent-vm restart' to restart it"
            )
        if rt.state != VmState.STOPPED:
            # A crash (or an interrupted agent-vm) left this behind: recover.
            if rt.pid is not None and rt.pid_start_time is not None:
                _terminate(vm, rt.pid, rt.pid_start_time, grace_term=2.0)
            warn(f"recovering VM {vm.name} from state {rt.state.value}", vm=vm.name)
            _cleanup_runtime_files(vm, cfg)
            rt = Runtime(state=VmState.FAILED, reason=rt.reason)
        cfg = _ensure_ports(ctx, vm, cfg)
        params = params_for(vm, cfg, cfg.ssh_port, cfg.agent_port)
        atomic_write(vm.params, params.to_json())

        transition(rt, VmState.STARTING, vm.name)
        rt = Runtime(
            state=VmState.STARTING,
            ssh_port=cfg.ssh_port,
            agent_port=cfg.agent_port,
            started_at=datetime.now(UTC),
        )
        store.save(vm.runtime, rt)
        emit(EventKind.VM_STARTING, f"starting VM {vm.name}", vm=vm.name)
        try:
            return cfg, _boot(ctx, vm, cfg, rt)
        except (BuildFailed, MissingTool, KeyboardInterrupt) as exc:
            # Nothing ran (or the user changed their mind): QEMU is gone, so
            # the VM is simply stopped, not failed.
            rt = Runtime(state=VmState.STOPPED, stopped_at=datetime.now(UTC), stages=rt.stages)
            store.save(vm.runtime, rt)
            why = "interrupted" if isinstance(exc, KeyboardInterrupt) else exc.message
            emit(EventKind.VM_STOPPED, f"VM {vm.name} not started: {why}", vm=vm.name)
            raise
        except BaseException as exc:
            rt.state = VmState.FAILED
            rt.reason = getattr(exc, "message", None) or type(exc).__name__
            rt.pid = rt.pid_start_time = None
            store.save(vm.runtime, rt)
            # INFO, not ERROR: cli.main reports the exception itself, and
            # the user should see one error line, not two.
            emit(
                EventKind.VM_FAILED,
                f"VM {vm.name} failed to start: {rt.reason}",
                severity=Severity.INFO,
                vm=vm.name,
            )
            raise


def _boot(ctx: Context, vm: VmPaths, cfg: VmConfig, rt: Runtime) -> Runtime:
    emit(EventKind.BUILD_STARTED, "building the VM with nix", vm=vm.name)
    t0 = time.monotonic()
    try:
        runner = nixbuild.build(vm, ctx.flake)
    except BuildFailed as exc:
        # Only a build that ran and failed is BUILD_FAILED (a missing nix or
        # Ctrl-C is not); cli.main prints the error line.
        emit(EventKind.BUILD_FAILED, exc.message, severity=Severity.INFO, vm=vm.name)
        raise
    rt.stages.append(StageTiming(stage="build", seconds=round(time.monotonic() - t0, 3), ok=True))
    emit(EventKind.BUILD_COMPLETED, f"built {runner.resolve()}", vm=vm.name)
    mapping = ownership.for_host_user()
    if mapping.needs_tagging:
        ownership.tag_tree(Path(cfg.workspace), mapping)
    _cleanup_runtime_files(vm, cfg)

    accelerator, why = accel.choose(ctx.layout)
    emit(EventKind.STAGE, f"accelerator: {accelerator} ({why})", vm=vm.name, accel=accelerator)
    deadline = time.monotonic() + ctx.timeout
    with open(vm.runner_log, "ab") as log:
        proc = tools.spawn([str(runner)], log=log, env={accel.ENV: accelerator})
    rt.pid = proc.pid
    rt.pid_start_time = procs.start_time(proc.pid)
    store.save(vm.runtime, rt)
    emit(
        EventKind.PROCESS_SPAWNED, f"QEMU runner started (pid {proc.pid})", vm=vm.name, pid=proc.pid
    )
    probe = readiness.Probe(vm, cfg, proc, cfg.ssh_port, cfg.agent_port, deadline, ctx.timeout)
    try:
        stages = readiness.wait_ready(probe)
    except BaseException:
        if rt.pid is not None and rt.pid_start_time is not None:
            _terminate(vm, rt.pid, rt.pid_start_time, grace_term=3.0)
        proc.poll()
        _cleanup_runtime_files(vm, cfg)
        raise
    # With virtiofs the runner stays QEMU's parent; from here on the pid we
    # supervise is QEMU's own.
    qpid = readiness.qemu_pid(vm)
    if qpid is not None and qpid != rt.pid and procs.is_alive(qpid):
        rt.pid, rt.pid_start_time = qpid, procs.start_time(qpid)
    rt.stages += stages
    transition(rt, VmState.RUNNING, vm.name)
    rt.ready_at = datetime.now(UTC)
    store.save(vm.runtime, rt)
    total = sum(s.seconds for s in rt.stages)
    emit(
        EventKind.VM_STARTED,
        f"VM {vm.name} is ready ({total:.1f}s)",
        severity=Severity.NOTICE,
        vm=vm.name,
        stages=[s.model_dump() for s in rt.stages],
    )
    return rt


SUPERVISE_POLL = 0.5


def supervise(ctx: Context, vm: VmPaths, timeouts: StopTimeouts | None = None) -> None:
    """Stay in the foreground while the VM's QEMU runs (`start --foreground`).

    This is what the NixOS host module's systemd units run: SIGTERM (which
    the CLI turns into KeyboardInterrupt) powers the VM down cleanly and
    returns; QEMU going away by itself raises GuestFailed, a failure for
    systemd to restart.
    """
    rt = store.load_runtime(vm)
    sdnotify.notify(
        ready="1",
        mainpid=str(os.getpid()),
        status=f"VM {vm.name} running (ssh port {rt.ssh_port}, agent port {rt.agent_port})",
    )
    try:
        while procs.is_ours(rt.pid, rt.pid_start_time, vm.dir):
            time.sleep(SUPERVISE_POLL)
    except KeyboardInterrupt:
        sdnotify.notify(stopping="1", status=f"powering VM {vm.name} down")
        stop(ctx, vm, timeouts)
        return
    reason = "QEMU exited while the VM was supervised"
    with ctx.lock(vm.name):
        current = store.load_runtime(vm)
        if current.pid == rt.pid and current.state == VmState.RUNNING:
            current.state, current.reason = VmState.FAILED, reason
            current.pid = current.pid_start_time = None
            store.save(vm.runtime, current)
    emit(EventKind.VM_FAILED, f"VM {vm.name}: {reason}", severity=Severity.INFO, vm=vm.name)
    raise GuestFailed(f"VM {vm.name}: {reason}", hint=f"see {vm.serial_log}")


@dataclass
class StopTimeouts:
    powerdown: float = 30.0
    term: float = 10.0
    kill: float = 5.0


def stop(ctx: Context, vm: VmPaths, timeouts: StopTimeouts | None = None) -> Runtime:
    timeouts = timeouts or StopTimeouts()
    with ctx.lock(vm.name):
        _attach(ctx, vm.name)
        cfg = store.load_config(vm)
        rt = store.load_runtime(vm)
        return _stop_locked(vm, cfg, rt, timeouts)


def _stop_locked(vm: VmPaths, cfg: VmConfig | None, rt: Runtime, t: StopTimeouts) -> Runtime:
    if not alive(rt, vm.dir):
        was = rt.state
        _cleanup_runtime_files(vm, cfg)
        rt = Runtime(state=VmState.STOPPED, stopped_at=datetime.now(UTC))
        store.save(vm.runtime, rt)
        if was == VmState.STOPPED:
            raise NotRunning(f"VM {vm.name} is not running")
        warn(f"VM {vm.name} was {was.value} but its QEMU is gone; cleaned up", vm=vm.name)
        return rt
    assert rt.pid is not None and rt.pid_start_time is not None
    pid, start_t = rt.pid, rt.pid_start_time
    transition(rt, VmState.STOPPING, vm.name)
    store.save(vm.runtime, rt)
    emit(EventKind.VM_STOPPING, f"stopping VM {vm.name}", vm=vm.name)
    gone = False
    if qmp.powerdown(vm.qmp_socket):
        emit(EventKind.VM_STOPPING, "sent ACPI powerdown", severity=Severity.DEBUG, vm=vm.name)
        gone = procs.wait_gone(pid, t.powerdown)
        if not gone:
            warn(f"guest ignored the powerdown for {t.powerdown:g}s; terminating QEMU", vm=vm.name)
    if not gone:
        gone = _terminate(vm, pid, start_t, grace_term=t.term)
    if not gone:
        rt.state = VmState.FAILED
        rt.reason = f"QEMU (pid {pid}) survived SIGKILL"
        store.save(vm.runtime, rt)
        raise StopFailed(rt.reason)
    emit(EventKind.PROCESS_EXITED, f"QEMU (pid {pid}) exited", vm=vm.name, pid=pid)
    _cleanup_runtime_files(vm, cfg)
    rt = Runtime(state=VmState.STOPPED, stopped_at=datetime.now(UTC))
    store.save(vm.runtime, rt)
    for what in ("SSH", "agent"):
        emit(EventKind.PORT_RELEASED, f"{what} port released", severity=Severity.DEBUG, vm=vm.name)
    emit(EventKind.VM_STOPPED, f"VM {vm.name} stopped", severity=Severity.NOTICE, vm=vm.name)
    return rt


def destroy(ctx: Context, vm: VmPaths, force: bool = False) -> None:
    if not vm.dir.exists():
        raise NotFound(f"no VM named {vm.name!r}")
    with ctx.lock(vm.name):
        try:
            cfg: VmConfig | None = store.load_config(vm)
        except CorruptState:
            if not force:
                raise
            cfg = None
        try:
            rt = store.load_runtime(vm)
        except CorruptState:
            if not force:
                raise
            rt = _runtime_from_pidfile(vm)
        if cfg is not None and cfg.workspace_owned and not force:
            reasons = gitops.unsaved_work(Path(cfg.workspace))
            if reasons:
                raise UnsavedWork(
                    f"VM {vm.name}'s workspace has {', '.join(reasons)}",
                    hint="push or copy your work (workspace: "
                    f"{cfg.workspace}), or destroy with --force",
                )
        if alive(rt, vm.dir):
            _stop_locked(vm, cfg, rt, StopTimeouts())
        shutil.rmtree(vm.dir, onerror=_force_remove)
    emit(EventKind.WORKSPACE_REMOVED, "workspace removed", severity=Severity.DEBUG, vm=vm.name)
    emit(EventKind.VM_DESTROYED, f"destroyed VM {vm.name}", severity=Severity.NOTICE, vm=vm.name)


def _runtime_from_pidfile(vm: VmPaths) -> Runtime:
    """For a VM whose runtime.json is unreadable: trust only QEMU's pidfile."""
    pid = readiness.qemu_pid(vm)
    if pid is None:
        return Runtime()
    return Runtime(state=VmState.RUNNING, pid=pid, pid_start_time=procs.start_time(pid))


@dataclass
class Changes:
    memory: int | None = None
    cores: int | None = None
    port: int | None = None
    ssh_port: int | None = None
    host: str | None = None
    disk_size: int | None = None
    network: Network | None = None
    ephemeral: bool | None = None
    user_module: Path | None = None


def update(ctx: Context, vm: VmPaths, ch: Changes) -> tuple[VmConfig, bool]:
    """Apply `ch` to the VM's config; True if the VM runs and needs a restart."""
    with ctx.lock(vm.name):
        _attach(ctx, vm.name)
        cfg = store.load_config(vm)
        rt = store.load_runtime(vm)
        probe = CreateOptions(
            host=ch.host or cfg.host_address,
            port=ch.port,
            ssh_port=ch.ssh_port,
            memory=ch.memory or cfg.memory_mib,
            cores=ch.cores or cfg.cores,
            disk_size=ch.disk_size or cfg.disk_size_mib,
            config=ch.user_module,
        )
        _validate_options(probe)
        # A value equal to the current one is not a change (`up` passes a
        # declaration's every setting at each start).
        upd: dict[str, object] = {}
        for key, value in (
            ("memory_mib", ch.memory),
            ("cores", ch.cores),
            ("host_address", ch.host),
            ("disk_size_mib", ch.disk_size),
            ("network", ch.network),
            ("ephemeral", ch.ephemeral),
            ("user_module", str(ch.user_module.resolve()) if ch.user_module else None),
        ):
            if value is not None and value != getattr(cfg, key):
                upd[key] = value
        new_ssh = _new_pin(ch.ssh_port, cfg.ssh_port, cfg.ssh_port_pinned)
        new_agent = _new_pin(ch.port, cfg.agent_port, cfg.agent_port_pinned)
        if new_ssh is not None or new_agent is not None:
            with ctx.ports_lock():
                taken = taken_ports(ctx.layout, exclude=cfg.name)
                running_ports = {rt.ssh_port, rt.agent_port} if alive(rt, vm.dir) else set()
                host = ch.host or cfg.host_address
                if new_ssh is not None:
                    if new_ssh not in running_ports:
                        ports.require(host, new_ssh, taken, "SSH")
                    upd.update(ssh_port=new_ssh, ssh_port_pinned=True)
                if new_agent is not None:
                    if new_agent not in running_ports:
                        ports.require(host, new_agent, taken | {new_ssh or cfg.ssh_port}, "agent")
                    upd.update(agent_port=new_agent, agent_port_pinned=True)
                cfg = _save_changes(vm, cfg, upd)
        elif upd:
            cfg = _save_changes(vm, cfg, upd)
        if upd:
            emit(
                EventKind.VM_UPDATED,
                f"updated VM {vm.name}: " + ", ".join(f"{k}={v}" for k, v in upd.items()),
                severity=Severity.NOTICE,
                vm=vm.name,
            )
        return cfg, bool(upd) and alive(rt, vm.dir)


def _new_pin(wanted: int | None, current: int, pinned: bool) -> int | None:
    """A port given to update is a pinned port: None if that is no change."""
    return None if wanted == current and pinned else wanted


def _save_changes(vm: VmPaths, cfg: VmConfig, upd: dict[str, object]) -> VmConfig:
    cfg = VmConfig.model_validate({**cfg.model_dump(), **upd})
    store.save(vm.config, cfg)
    return cfg


def reset(ctx: Context, vm: VmPaths) -> bool:
    """Delete the VM's disk (all guest state); True if there was one."""
    with ctx.lock(vm.name):
        _attach(ctx, vm.name)
        store.load_config(vm)
        rt = store.load_runtime(vm)
        if alive(rt, vm.dir):
            raise AlreadyRunning(f"VM {vm.name} is running", hint="stop it first")
        existed = vm.disk.exists()
        with contextlib.suppress(FileNotFoundError):
            vm.disk.unlink()
        emit(
            EventKind.VM_RESET,
            f"reset VM {vm.name}: disk deleted",
            severity=Severity.NOTICE,
            vm=vm.name,
        )
        return existed


def current_state(ctx: Context, vm: VmPaths, rt: Runtime) -> tuple[VmState, str | None]:
    return effective(rt, vm.dir, ctx.layout.vm_lock(vm.name))


__all__ = [
    "Changes",
    "Context",
    "CreateOptions",
    "StopTimeouts",
    "create",
    "destroy",
    "reset",
    "start",
    "stop",
    "update",
]
