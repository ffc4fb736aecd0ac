"""The VM lifecycle verbs: create, start, stop, destroy, update, reset.

Each verb is "take the VM's lock, check the state, act": the lock is held
for the verb's whole length, so two terminals cannot interleave on one VM;
port choices additionally hold the state directory's ports lock until they
are written down. Everything else lives in the modules these call: ports
(reservation), params (the contract file), procs (signalling our QEMU),
readiness (the staged wait), state (the legal transitions).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shutil
import stat
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from pydantic import ValidationError

from . import (
    accel,
    agent_secrets,
    diskspace,
    fsutil,
    gitops,
    keys,
    nixbuild,
    ownership,
    params,
    ports,
    preflight,
    procs,
    qmp,
    readiness,
    snapshot,
    state,
    store,
    suspension,
    tools,
    unsaved,
    workspace_disk,
)
from .context import Context
from .egress import process as egress_process
from .egress import setup as egress_setup
from .errors import (
    AlreadyExists,
    AlreadyRunning,
    BuildFailed,
    CorruptState,
    FlakeNotFound,
    InvalidInput,
    MissingTool,
    NotFound,
    NotRunning,
    StopFailed,
)
from .events import REPORTER, EventKind, Severity, emit, warn
from .fsutil import atomic_write, ensure_private_dir, rotate
from .models import (
    AGENT_PORT_START,
    DEFAULT_ALLOW,
    PORT_RANGE,
    SSH_PORT_START,
    Network,
    Runtime,
    Snapshot,
    StageTiming,
    VmConfig,
    VmSettings,
    VmState,
    WorkspaceMode,
)
from .names import vm_name
from .paths import VmPaths
from .shares import check_workspace_dir


@dataclass
class CreateOptions:
    """What `create` (and `up` for a new VM) was given."""

    branch: str | None = None
    # Only the settings given (VmSettings field names); the rest default.
    settings: Mapping[str, object] = field(default_factory=dict)
    port: int | None = None
    ssh_port: int | None = None
    pin: bool = False
    workspace: Path | None = None
    # The egress allowlist (--allow, --allow-file); None: the default list.
    allow: list[str] | None = None


@dataclass
class Changes:
    """What `update` (and `up` for an existing VM) was given; None: not given."""

    settings: Mapping[str, object] = field(default_factory=dict)
    port: int | None = None
    ssh_port: int | None = None
    allow: list[str] | None = None  # the whole list
    add_allow: list[str] = field(default_factory=list)
    remove_allow: list[str] = field(default_factory=list)


@dataclass
class StopTimeouts:
    powerdown: float = 30.0
    term: float = 10.0
    kill: float = 5.0


def _attach(ctx: Context, name: str) -> None:
    REPORTER.attach(name, ctx.layout.vm(name).events_log)


def _settings(base: Mapping[str, object], given: Mapping[str, object]) -> VmSettings:
    """`given` applied to `base`, validated; an error names the flag typed."""
    given = dict(given)
    module = given.get("user_module")
    if module is not None:
        path = Path(str(module))
        if not path.is_file():
            raise InvalidInput(f"{VmSettings.flag('user_module')} {path} is not a file")
        given["user_module"] = str(path.resolve())
    try:
        return VmSettings.model_validate({**base, **given})
    except ValidationError as exc:
        first = exc.errors()[0]
        name = str(first["loc"][0]) if first["loc"] else ""
        flag = VmSettings.flag(name) if name in VmSettings.model_fields else name
        msg = str(first["msg"]).removeprefix("Value error, ")
        raise InvalidInput(f"{flag}: {msg}") from None


def _check_port_flags(*pairs: tuple[str, int | None]) -> None:
    lo, hi = PORT_RANGE
    for flag, value in pairs:
        if value is not None and not lo <= value <= hi:
            raise InvalidInput(f"{flag} {value} is out of range ({lo}-{hi})")


def create(ctx: Context, opts: CreateOptions) -> VmConfig:
    settings = _settings({}, opts.settings)
    _check_port_flags(("--port", opts.port), ("--ssh-port", opts.ssh_port))
    disk_mode = settings.workspace_mode == WorkspaceMode.DISK
    if opts.workspace is not None and disk_mode:
        raise InvalidInput(
            f"--workspace shares a directory; {VmSettings.flag('workspace_mode')} disk "
            "puts the workspace on a disk of the VM's own",
            hint="give one or the other",
        )
    shared = (
        None if opts.workspace is None else check_workspace_dir(opts.workspace, ctx.layout.root)
    )
    allow = list(DEFAULT_ALLOW) if opts.allow is None else opts.allow
    allow = egress_setup.check_patterns(allow, "--allow")
    repo = gitops.repo_root(ctx.cwd)
    checkout = gitops.resolve(repo, opts.branch)
    name = vm_name(str(repo), checkout.branch)
    vm = ctx.layout.vm(name)
    if not ipaddress.ip_address(settings.host_address).is_loopback:
        warn(
            f"binding the VM's ports to {settings.host_address} exposes SSH and the agent "
            "to the network"
        )
    # The lock makes the state dir itself.
    with diskspace.guard(ctx.layout.root), ctx.lock(name):
        ensure_private_dir(ctx.layout.vms)
        if vm.dir.exists():
            raise AlreadyExists(
                f"a VM for branch {checkout.branch!r} of {repo} already exists ({name})",
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
            agent_secrets.prepare(tmp)
            emit(EventKind.SSH_KEY_GENERATED, "generated SSH client and host keys", vm=name)
            if shared is not None:
                workspace, owned = shared, False
            elif disk_mode:
                workspace_disk.make(checkout, tmp.workspace_disk, settings.disk_size_mib)
                workspace, owned = vm.workspace_disk, True
                emit(
                    EventKind.WORKSPACE_CLONED,
                    f"workspace disk made from {repo} at {checkout.commit[:12]}",
                    vm=name,
                )
            else:
                gitops.make_workspace(checkout, tmp.workspace)
                gitops.report_left_out(checkout, name)
                workspace, owned = vm.workspace, True
                emit(
                    EventKind.WORKSPACE_CLONED,
                    f"workspace cloned from {repo} at {checkout.commit[:12]}",
                    vm=name,
                )
            with ctx.ports_lock():
                taken = ports.taken_by_vms(ctx.layout)
                host = settings.host_address
                pin_ssh = opts.ssh_port if opts.pin else None
                pin_agent = opts.port if opts.pin else None
                ssh_port = ports.pick(host, pin_ssh, opts.ssh_port or SSH_PORT_START, taken, "SSH")
                agent_port = ports.pick(
                    host, pin_agent, opts.port or AGENT_PORT_START, taken | {ssh_port}, "agent"
                )
                cfg = VmConfig(
                    **settings.model_dump(),
                    name=name,
                    branch=checkout.branch,
                    repo=str(repo),
                    commit=checkout.commit,
                    workspace=str(workspace),
                    workspace_owned=owned,
                    ssh_port=ssh_port,
                    agent_port=agent_port,
                    ssh_port_pinned=pin_ssh is not None,
                    agent_port_pinned=pin_agent is not None,
                    allow=allow,
                    created_at=datetime.now(UTC),
                )
                store.save(tmp.config, cfg)
                os.rename(tmp.dir, vm.dir)
        except BaseException as exc:
            # Before the cleanup frees what the failed step wrote.
            full = diskspace.explains(exc, ctx.layout.root)
            shutil.rmtree(tmp.dir, onerror=_force_remove)
            if full is not None:
                raise full from exc
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


def _cleanup_runtime_files(vm: VmPaths, cfg: VmConfig | None) -> None:
    # The RAM file of a QEMU that is gone holds no snapshot here: a
    # suspended VM never comes through this path.
    fsutil.remove(*vm.qemu_leftovers, vm.memory_file)
    if cfg is not None and cfg.ephemeral:
        fsutil.remove(vm.disk)
    # Gone with its QEMU already; this is for one that outlived it.
    egress_process.stop(vm.dir)


def start(ctx: Context, vm: VmPaths) -> tuple[VmConfig, Runtime]:
    preflight.check_start()
    with diskspace.guard(ctx.layout.root), ctx.lock(vm.name):
        _attach(ctx, vm.name)
        cfg = store.load_config(vm)
        rt = store.load_runtime(vm)
        if rt.state == VmState.RUNNING and state.alive(rt, vm.dir):
            raise AlreadyRunning(
                f"VM {vm.name} is already {rt.state.value}", hint="'agent-vm restart' to restart it"
            )
        if rt.state == VmState.SUSPENDED:
            return cfg, _resume_locked(ctx, vm, cfg, rt)
        if snapshot.exists(vm):
            # Left by a resume or suspend that did not finish: never restored
            # into a VM whose record says otherwise.
            _discard_snapshot(vm, f"the VM is {rt.state.value}, not suspended")
        if rt.state != VmState.STOPPED:
            # A crash, or an agent-vm killed while starting or stopping (we
            # hold the lock it held), left this behind: recover.
            if rt.pid is not None and rt.pid_start_time is not None:
                procs.terminate(rt.pid, rt.pid_start_time, vm.dir, grace_term=2.0)
            warn(f"recovering VM {vm.name} from state {rt.state.value}", vm=vm.name)
            _cleanup_runtime_files(vm, cfg)
            rt = state.settle(rt, vm.dir, vm.name)
        with ctx.ports_lock():
            changed = ports.recheck(ctx.layout, cfg)
            if changed:
                cfg = cfg.model_copy(update=changed)
                store.save(vm.config, cfg)
        if cfg.network == Network.ALLOW:
            egress_setup.prepare(vm.dir, cfg, ctx.layout.root)
        atomic_write(vm.params, params.for_vm(vm, cfg).to_json())
        agent_secrets.prepare(vm)
        rt = state.starting(rt, vm.name, cfg.ssh_port, cfg.agent_port)
        store.save(vm.runtime, rt)
        emit(EventKind.VM_STARTING, f"starting VM {vm.name}", vm=vm.name)
        try:
            rt = _boot(ctx, vm, cfg, rt)
        except (BuildFailed, FlakeNotFound, MissingTool) as exc:
            # Nothing ran: the VM is simply stopped, not failed.
            store.save(vm.runtime, state.stopped(store.load_runtime(vm), vm.name))
            emit(EventKind.VM_STOPPED, f"VM {vm.name} not started: {exc.message}", vm=vm.name)
            raise
        except KeyboardInterrupt:
            # _boot stopped whatever it had started.
            store.save(vm.runtime, state.stopped(store.load_runtime(vm), vm.name))
            emit(EventKind.VM_STOPPED, f"VM {vm.name} not started: interrupted", vm=vm.name)
            raise
        except BaseException as exc:
            reason = getattr(exc, "message", None) or type(exc).__name__
            store.save(vm.runtime, state.failed(store.load_runtime(vm), vm.name, reason))
            # INFO, not ERROR: cli.main reports the exception itself, and
            # the user should see one error line, not two.
            emit(
                EventKind.VM_FAILED,
                f"VM {vm.name} failed to start: {reason}",
                severity=Severity.INFO,
                vm=vm.name,
            )
            raise
        return cfg, rt


def _boot(ctx: Context, vm: VmPaths, cfg: VmConfig, rt: Runtime) -> Runtime:
    """Build, spawn and wait; on any exception nothing of the VM runs."""
    emit(EventKind.BUILD_STARTED, "building the VM with nix", vm=vm.name)
    t0 = time.monotonic()
    try:
        runner = nixbuild.build(vm, ctx.flake)
    except BuildFailed as exc:
        # Only a build that ran and failed is BUILD_FAILED (a missing nix or
        # Ctrl-C is not); cli.main prints the error line.
        emit(EventKind.BUILD_FAILED, exc.message, severity=Severity.INFO, vm=vm.name)
        raise
    build = StageTiming(stage="build", seconds=round(time.monotonic() - t0, 3), ok=True)
    rt = rt.model_copy(update={"stages": [build]})
    store.save(vm.runtime, rt)
    emit(EventKind.BUILD_COMPLETED, f"built {runner.resolve()}", vm=vm.name)
    mapping = ownership.for_host_user()
    if mapping.needs_tagging and cfg.workspace_mode == WorkspaceMode.SHARE:
        ownership.tag_tree(Path(cfg.workspace), mapping)
    _cleanup_runtime_files(vm, cfg)

    choice = accel.choose(ctx.layout, runner)
    emit(
        EventKind.STAGE,
        f"accelerator: {choice.accel} ({choice.why})",
        vm=vm.name,
        accel=choice.accel,
    )
    # This boot's lines only (error messages quote their tails); the
    # previous boot's stay as .1 for 'agent-vm logs --previous'.
    for log in (vm.runner_log, vm.serial_log):
        rotate(log)
    try:
        rt, stages = _spawn_and_wait(ctx, vm, cfg, rt, runner, accelerator=choice.accel)
    except readiness.KvmSilent as exc:
        if choice.forced:
            raise
        accel.record_unusable(ctx.layout, exc.message)
        emit(
            EventKind.ACCEL_FALLBACK,
            f"no console output under KVM for {readiness.KVM_SILENCE_SECONDS:g}s: "
            "KVM cannot run this guest here; starting again under TCG",
            severity=Severity.WARNING,
            vm=vm.name,
            accel="tcg",
        )
        rt, stages = _spawn_and_wait(ctx, vm, cfg, rt, runner, accelerator="tcg")
    rt = readiness.adopt_qemu_pid(vm, rt)
    rt = state.running(rt, vm.name, [*rt.stages, *stages])
    store.save(vm.runtime, rt)
    readiness.report_ready(vm, rt, "is ready")
    return rt


def _spawn_and_wait(
    ctx: Context, vm: VmPaths, cfg: VmConfig, rt: Runtime, runner: Path, *, accelerator: str
) -> tuple[Runtime, list[StageTiming]]:
    """One boot: the runner under `accelerator`, then the readiness wait; on
    any exception nothing of it runs."""
    deadline = time.monotonic() + ctx.timeout
    proc = None
    try:
        with open(vm.runner_log, "ab") as log:
            proc = tools.spawn([str(runner)], log=log, env={accel.ENV: accelerator})
        rt = rt.model_copy(update={"pid": proc.pid, "pid_start_time": procs.start_time(proc.pid)})
        store.save(vm.runtime, rt)
        emit(
            EventKind.PROCESS_SPAWNED,
            f"QEMU runner started (pid {proc.pid})",
            vm=vm.name,
            pid=proc.pid,
        )
        probe = readiness.Probe(
            vm, cfg, proc, cfg.ssh_port, cfg.agent_port, deadline, ctx.timeout, accelerator
        )
        stages = readiness.wait_ready(probe)
    except BaseException:
        # Whenever it came (even a Ctrl-C right after the spawn), nothing of
        # this start may keep running.
        if proc is not None:
            start_t = procs.start_time(proc.pid)
            if start_t is not None:
                procs.terminate(proc.pid, start_t, vm.dir, grace_term=3.0)
            proc.poll()
        _cleanup_runtime_files(vm, cfg)
        raise
    return rt, stages


def stop(ctx: Context, vm: VmPaths, timeouts: StopTimeouts | None = None) -> Runtime:
    with diskspace.guard(ctx.layout.root), ctx.lock(vm.name):
        _attach(ctx, vm.name)
        cfg = store.load_config(vm)
        rt = store.load_runtime(vm)
        return _stop_locked(vm, cfg, rt, timeouts or StopTimeouts())


def _stop_locked(vm: VmPaths, cfg: VmConfig | None, rt: Runtime, t: StopTimeouts) -> Runtime:
    if rt.state == VmState.STOPPED:
        _cleanup_runtime_files(vm, cfg)
        raise NotRunning(f"VM {vm.name} is not running")
    if rt.state == VmState.SUSPENDED:
        _discard_snapshot(vm, "stopped")
        _cleanup_runtime_files(vm, cfg)
        rt = state.stopped(rt, vm.name)
        store.save(vm.runtime, rt)
        emit(EventKind.VM_STOPPED, f"VM {vm.name} stopped", severity=Severity.NOTICE, vm=vm.name)
        return rt
    if not state.alive(rt, vm.dir):
        was = rt.state
        _cleanup_runtime_files(vm, cfg)
        rt = state.stopped(state.settle(rt, vm.dir, vm.name), vm.name)
        store.save(vm.runtime, rt)
        warn(f"VM {vm.name} was {was.value} but its QEMU is gone; cleaned up", vm=vm.name)
        return rt
    assert rt.pid is not None and rt.pid_start_time is not None
    pid, start_t = rt.pid, rt.pid_start_time
    if rt.state != VmState.RUNNING:
        rt = state.settle(rt, vm.dir, vm.name)
    else:
        rt = state.stopping(rt, vm.name)
    store.save(vm.runtime, rt)
    emit(EventKind.VM_STOPPING, f"stopping VM {vm.name}", vm=vm.name)
    gone = False
    if qmp.powerdown(vm.qmp_socket):
        emit(EventKind.VM_STOPPING, "sent ACPI powerdown", severity=Severity.DEBUG, vm=vm.name)
        gone = procs.wait_gone(pid, t.powerdown)
        if not gone:
            warn(f"guest ignored the powerdown for {t.powerdown:g}s; terminating QEMU", vm=vm.name)
    if not gone:
        gone = procs.terminate(pid, start_t, vm.dir, grace_term=t.term)
    if not gone:
        reason = f"QEMU (pid {pid}) survived SIGKILL"
        store.save(vm.runtime, rt.model_copy(update={"reason": reason}))
        raise StopFailed(reason)
    emit(EventKind.PROCESS_EXITED, f"QEMU (pid {pid}) exited", vm=vm.name, pid=pid)
    _cleanup_runtime_files(vm, cfg)
    rt = state.stopped(rt, vm.name)
    store.save(vm.runtime, rt)
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
        check = cfg is not None and cfg.workspace_owned and not force
        if check and cfg is not None:
            unsaved.refuse_if_unsaved(ctx.layout, vm, cfg)
        if state.alive(rt, vm.dir):
            _stop_locked(vm, cfg, rt, StopTimeouts())
            # What the guest wrote until it stopped (a disk workspace is read
            # only from the running guest: its check above is the last).
            if check and cfg is not None and cfg.workspace_mode != WorkspaceMode.DISK:
                unsaved.refuse_if_unsaved(ctx.layout, vm, cfg)
        shutil.rmtree(vm.dir, onerror=_force_remove)
        if os.path.lexists(vm.dir):
            raise CorruptState(
                f"could not remove all of {vm.dir}",
                hint="something there belongs to another user: remove it as that user",
            )
    if cfg is not None and cfg.workspace_owned:
        emit(EventKind.WORKSPACE_REMOVED, "workspace removed", severity=Severity.DEBUG, vm=vm.name)
    emit(EventKind.VM_DESTROYED, f"destroyed VM {vm.name}", severity=Severity.NOTICE, vm=vm.name)


def _runtime_from_pidfile(vm: VmPaths) -> Runtime:
    """For a VM whose runtime.json is unreadable: trust only QEMU's pidfile."""
    pid = readiness.qemu_pid(vm)
    if pid is None:
        return Runtime()
    return Runtime(state=VmState.RUNNING, pid=pid, pid_start_time=procs.start_time(pid))


def update(ctx: Context, vm: VmPaths, ch: Changes) -> tuple[VmConfig, bool]:
    """Apply `ch` to the VM's config; True if the VM runs and needs a restart."""
    with diskspace.guard(ctx.layout.root), ctx.lock(vm.name):
        _attach(ctx, vm.name)
        cfg = store.load_config(vm)
        rt = store.load_runtime(vm)
        _check_port_flags(("--port", ch.port), ("--ssh-port", ch.ssh_port))
        current = cfg.settings()
        new = _settings(current.model_dump(), ch.settings)
        # A value equal to the current one is not a change (`up` passes a
        # declaration's every setting at each start).
        upd: dict[str, object] = {
            k: v for k, v in new.model_dump().items() if v != getattr(current, k)
        }
        allow = egress_setup.edit_allowlist(cfg.allow, ch)
        if allow is not None and allow != cfg.allow:
            upd["allow"] = allow
        if new.disk_size_mib < current.disk_size_mib and vm.disk.exists():
            raise InvalidInput(
                f"{VmSettings.flag('disk_size_mib')} {new.disk_size_mib} is smaller than "
                f"VM {vm.name}'s disk ({current.disk_size_mib} MiB): a disk cannot shrink",
                hint="'agent-vm reset' deletes the disk (everything the guest stored outside "
                "the workspace); the next start then makes one of the new size",
            )
        new_ssh = _new_pin(ch.ssh_port, cfg.ssh_port, cfg.ssh_port_pinned)
        new_agent = _new_pin(ch.port, cfg.agent_port, cfg.agent_port_pinned)
        if rt.state == VmState.SUSPENDED and (upd or new_ssh or new_agent):
            changed = [*upd, *(["ssh_port"] if new_ssh else []), *(["port"] if new_agent else [])]
            raise InvalidInput(
                f"VM {vm.name} is suspended: its saved state belongs to its current settings "
                f"({', '.join(changed)} would change)",
                hint="'agent-vm resume' it, or 'agent-vm stop' to discard the snapshot; "
                "then update",
            )
        if "workspace_mode" in upd:
            raise InvalidInput(
                f"VM {vm.name}'s workspace is a {cfg.workspace_mode.value}: the workspace mode "
                "is chosen when a VM is made",
                hint="bring your work out ('agent-vm pull'), destroy the VM and create it "
                f"with {VmSettings.flag('workspace_mode')} {upd['workspace_mode']}",
            )
        running = state.alive(rt, vm.dir)
        if new_ssh is not None or new_agent is not None:
            with ctx.ports_lock():
                taken = ports.taken_by_vms(ctx.layout, exclude=cfg.name)
                running_ports = {rt.ssh_port, rt.agent_port} if running else set()
                host = new.host_address
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
            # A running proxy applies a new allowlist at once.
            egress_setup.refresh(vm.dir, ctx.layout.root)
            if "host_address" in upd and not ipaddress.ip_address(cfg.host_address).is_loopback:
                warn(
                    f"binding the VM's ports to {cfg.host_address} exposes SSH and the agent "
                    "to the network",
                    vm=vm.name,
                )
            emit(
                EventKind.VM_UPDATED,
                f"updated VM {vm.name}: " + ", ".join(f"{k}={v}" for k, v in upd.items()),
                severity=Severity.NOTICE,
                vm=vm.name,
            )
        # The allowlist applies live; everything else at the next start.
        return cfg, bool(set(upd) - {"allow"}) and running


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
        if state.alive(rt, vm.dir):
            raise AlreadyRunning(f"VM {vm.name} is running", hint="stop it first")
        if rt.state == VmState.SUSPENDED:
            # The snapshot's memory belongs to the disk being deleted.
            _discard_snapshot(vm, "its disk is reset")
            store.save(vm.runtime, state.stopped(rt, vm.name))
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


def _discard_snapshot(vm: VmPaths, why: str) -> None:
    if snapshot.discard(vm):
        emit(
            EventKind.SNAPSHOT_DISCARDED,
            f"discarded VM {vm.name}'s snapshot ({why})",
            severity=Severity.NOTICE,
            vm=vm.name,
        )


def suspend(ctx: Context, vm: VmPaths) -> Snapshot:
    """Save the running VM (memory, devices) beside its disks and stop QEMU."""
    with diskspace.guard(ctx.layout.root), ctx.lock(vm.name):
        _attach(ctx, vm.name)
        cfg = store.load_config(vm)
        rt = store.load_runtime(vm)
        if rt.state == VmState.SUSPENDED:
            raise NotRunning(f"VM {vm.name} is already suspended")
        if rt.state != VmState.RUNNING or not state.alive(rt, vm.dir):
            current, _ = state.effective(rt, vm.dir, ctx.layout.vm_lock(vm.name))
            raise NotRunning(f"VM {vm.name} is {current.value}, not running")
        _, snap = suspension.save(vm, cfg, rt, ctx.layout.quarantine_lock(vm.name))
        return snap


def resume(ctx: Context, vm: VmPaths) -> tuple[VmConfig, Runtime]:
    """Continue a suspended VM where it was (start does the same for one)."""
    with diskspace.guard(ctx.layout.root), ctx.lock(vm.name):
        _attach(ctx, vm.name)
        cfg = store.load_config(vm)
        rt = store.load_runtime(vm)
        if rt.state != VmState.SUSPENDED:
            current, _ = state.effective(rt, vm.dir, ctx.layout.vm_lock(vm.name))
            raise NotRunning(
                f"VM {vm.name} is {current.value}, not suspended",
                hint="'agent-vm start' boots it",
            )
        return cfg, _resume_locked(ctx, vm, cfg, rt)


def _resume_locked(ctx: Context, vm: VmPaths, cfg: VmConfig, rt: Runtime) -> Runtime:
    snap = snapshot.load(vm)
    snapshot.check(vm, snap)
    if cfg.network == Network.ALLOW:
        # The runner starts the egress proxy again, from this configuration.
        egress_setup.prepare(vm.dir, cfg, ctx.layout.root)
    try:
        rt = suspension.restore(vm, cfg, rt, snap, ctx.timeout)
    except BaseException as exc:
        current = store.load_runtime(vm)
        if current.state == VmState.STARTING:
            # The guest had been continued: its snapshot is gone, and it
            # failed like a boot.
            reason = getattr(exc, "message", None) or type(exc).__name__
            store.save(vm.runtime, state.failed(current, vm.name, reason))
        raise
    store.save(vm.runtime, rt)
    readiness.report_ready(vm, rt, "resumed and ready")
    return rt
