"""One function per CLI verb: resolve the target, call lifecycle, print results.

Results go to stdout (plain text, or JSON with --json); progress and
warnings are events (see events.py) and go to stderr.

`COMMANDS` at the end is the table of verbs. Each function imports the
modules only it needs (lifecycle, ssh, doctor, …) inside itself: a command
pays the start-up time of what it uses, so `status` and `list` never load
the lifecycle, the process machinery or plumbum
(tests/unit/test_imports.py holds them to that).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from . import state, status, store, targets
from .context import Context
from .errors import HostNotReady, InvalidInput, NotFound, NotRunning
from .events import warn
from .fsutil import previous
from .models import VmConfig, VmSettings, VmState
from .paths import VmPaths

if TYPE_CHECKING:
    from collections.abc import Callable

    from pydantic import BaseModel

    from .lifecycle import Changes, CreateOptions, StopTimeouts


def _print_json(obj: object) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


def _connect_help(vm: VmPaths, cfg: VmConfig) -> str:
    from . import health, ssh

    argv = ssh.command_argv(vm, cfg, cfg.ssh_port, None, tty=True)
    address = health.client_address(cfg.host_address)
    return "\n".join(
        [
            f"VM {cfg.name} (branch {cfg.branch}) is running",
            f"  shell:  agent-vm shell {cfg.name}",
            f"  ssh:    {' '.join(_q(a) for a in argv)}",
            f"  agent:  http://{address}:{cfg.agent_port}/servers/<name>/mcp/"
            " (or …/sse; /status lists the servers; every request needs the token)",
            # Not the workspace's path: git run there on the host (a shell
            # prompt's too) obeys the guest's .git/config.
            f"  work:   agent-vm diff {cfg.name} (review), agent-vm pull {cfg.name} (take it)",
            _mcp_help(vm, cfg, cfg.agent_port, None),
        ]
    )


def _mcp_help(vm: VmPaths, cfg: VmConfig, port: int, servers: list[str] | None) -> str:
    """The client configuration lines; `servers` None: ask the running agent."""
    from . import agent_secrets, health, mcp_config

    token = agent_secrets.read_token(vm)
    if token is None:
        return "# MCP client configuration: the VM has no agent token until it starts"
    if servers is None:
        servers = health.agent_status(cfg.host_address, port, token)
    return mcp_config.render(mcp_config.build(cfg, port, token, servers))


def _mcp_env(a: argparse.Namespace) -> str | None:
    """The checked content of --mcp-env, read before anything is changed."""
    from . import agent_secrets

    path = getattr(a, "mcp_env", None)
    return agent_secrets.read_env_file(Path(path)) if path else None


def _apply_mcp_env(ctx: Context, vm: VmPaths, text: str | None) -> None:
    from . import agent_secrets

    if text is None:
        return
    with ctx.lock(vm.name):
        changed = agent_secrets.set_mcp_secrets(vm, text)
    if changed and status.status(ctx, vm, probe=False).state == VmState.RUNNING:
        warn(
            f"VM {vm.name} runs with its old MCP environment",
            hint="'agent-vm restart' hands the new one in",
        )


def _q(a: str) -> str:
    return (
        a
        if a and all(c.isalnum() or c in "@%+=:,./-_" for c in a)
        else "'" + a.replace("'", "'\\''") + "'"
    )


def _given_settings(a: argparse.Namespace) -> dict[str, object]:
    """The settings given on the command line (argparse dests are the
    VmSettings field names; None means not given)."""
    return {
        name: getattr(a, name)
        for name in VmSettings.model_fields
        if getattr(a, name, None) is not None
    }


def _allowlist(a: argparse.Namespace) -> list[str] | None:
    """--allow and --allow-file together; None when neither was given."""
    if a.allow is None and a.allow_file is None:
        return None
    from .egress import patterns as egress_patterns

    patterns = list(a.allow or [])
    if a.allow_file is not None:
        try:
            text = Path(a.allow_file).read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidInput(f"--allow-file {a.allow_file}: {exc}") from None
        patterns += egress_patterns.read_file(text)
    return patterns


def _create_options(a: argparse.Namespace) -> CreateOptions:
    from .lifecycle import CreateOptions

    return CreateOptions(
        branch=a.branch,
        settings=_given_settings(a),
        port=a.port,
        ssh_port=a.ssh_port,
        pin=a.pin,
        workspace=Path(a.workspace) if a.workspace else None,
        allow=_allowlist(a),
    )


def cmd_create(ctx: Context, a: argparse.Namespace) -> int:
    from . import lifecycle

    env = _mcp_env(a)
    cfg = lifecycle.create(ctx, _create_options(a))
    _apply_mcp_env(ctx, ctx.layout.vm(cfg.name), env)
    if a.json:
        _print_json(status.as_json(status.status(ctx, ctx.layout.vm(cfg.name), probe=False)))
    else:
        print(
            f"created VM {cfg.name} for branch {cfg.branch} "
            f"(ssh port {cfg.ssh_port}, agent port {cfg.agent_port})"
        )
    return 0


def _report_started(ctx: Context, vm: VmPaths, cfg: VmConfig, as_json: bool) -> None:
    if as_json:
        _print_json(status.as_json(status.status(ctx, vm, probe=False)))
    else:
        print(_connect_help(vm, cfg))


def cmd_start(ctx: Context, a: argparse.Namespace) -> int:
    from . import lifecycle

    vm = targets.resolve(ctx, a.target)
    cfg, _ = lifecycle.start(ctx, vm)
    _report_started(ctx, vm, cfg, a.json)
    if a.foreground:
        from .supervise import supervise

        supervise(ctx, vm)
    return 0


def cmd_up(ctx: Context, a: argparse.Namespace) -> int:
    from . import lifecycle, preflight

    preflight.check_start()  # before a VM is made that could not start
    env = _mcp_env(a)
    # Only this repository's branch: a VM of another repository with the
    # same branch name is never taken over.
    _, vm = targets.for_branch(ctx, a.branch)
    if vm.dir.exists():
        _apply_settings(ctx, vm, a)
    else:
        cfg = lifecycle.create(ctx, _create_options(a))
        vm = ctx.layout.vm(cfg.name)
    _apply_mcp_env(ctx, vm, env)
    if status.status(ctx, vm, probe=False).state != VmState.RUNNING:
        lifecycle.start(ctx, vm)
    _report_started(ctx, vm, store.load_config(vm), a.json)
    if a.foreground:
        from .supervise import supervise

        supervise(ctx, vm)
    return 0


def _changes(a: argparse.Namespace, ports: bool) -> Changes:
    """The settings given on an `update` or `up` command line."""
    from .lifecycle import Changes

    return Changes(
        settings=_given_settings(a),
        port=a.port if ports else None,
        ssh_port=a.ssh_port if ports else None,
        allow=_allowlist(a),
        add_allow=getattr(a, "add_allow", []),
        remove_allow=getattr(a, "remove_allow", []),
    )


def _apply_settings(ctx: Context, vm: VmPaths, a: argparse.Namespace) -> None:
    """`up` on an existing VM: make it match the settings given on the command
    line (how the NixOS host module applies a changed declaration)."""
    from . import lifecycle

    cfg = store.load_config(vm)
    if a.workspace and Path(a.workspace).resolve() != Path(cfg.workspace):
        raise InvalidInput(
            f"VM {vm.name} already shares {cfg.workspace}; the workspace cannot change",
            hint="destroy the VM to share another directory",
        )
    # Without --pin a port is where the search started at creation, not a
    # setting: only pinned ports are applied.
    _, restart = lifecycle.update(ctx, vm, _changes(a, ports=a.pin))
    if restart:
        warn(
            f"VM {vm.name} is running with its old settings",
            hint="'agent-vm restart' applies the new ones",
        )


def _timeouts(a: argparse.Namespace) -> StopTimeouts:
    from .lifecycle import StopTimeouts

    return StopTimeouts(powerdown=a.grace) if a.grace is not None else StopTimeouts()


def cmd_stop(ctx: Context, a: argparse.Namespace) -> int:
    from . import lifecycle

    vm = targets.resolve(ctx, a.target)
    lifecycle.stop(ctx, vm, _timeouts(a))
    print(f"stopped VM {vm.name}")
    return 0


def cmd_restart(ctx: Context, a: argparse.Namespace) -> int:
    from . import lifecycle

    vm = targets.resolve(ctx, a.target)
    with contextlib.suppress(NotRunning):
        lifecycle.stop(ctx, vm, _timeouts(a))
    cfg, _ = lifecycle.start(ctx, vm)
    _report_started(ctx, vm, cfg, a.json)
    return 0


def cmd_update(ctx: Context, a: argparse.Namespace) -> int:
    from . import lifecycle

    vm = targets.resolve(ctx, a.target)
    env = _mcp_env(a)
    cfg, restart = lifecycle.update(ctx, vm, _changes(a, ports=True))
    _apply_mcp_env(ctx, vm, env)
    print(
        f"updated VM {cfg.name}"
        + ("; restart it to apply ('agent-vm restart')" if restart else "; applies on next start")
    )
    return 0


def cmd_suspend(ctx: Context, a: argparse.Namespace) -> int:
    from . import lifecycle

    vm = targets.resolve(ctx, a.target)
    snap = lifecycle.suspend(ctx, vm)
    print(
        f"suspended VM {vm.name}: {snap.size_bytes / 2**20:.0f} MiB saved in "
        f"{snap.suspend_seconds:.1f}s ('agent-vm resume' continues it)"
    )
    return 0


def cmd_resume(ctx: Context, a: argparse.Namespace) -> int:
    from . import lifecycle

    vm = targets.resolve(ctx, a.target)
    cfg, _ = lifecycle.resume(ctx, vm)
    _report_started(ctx, vm, cfg, a.json)
    return 0


def cmd_reset(ctx: Context, a: argparse.Namespace) -> int:
    from . import lifecycle

    vm = targets.resolve(ctx, a.target)
    existed = lifecycle.reset(ctx, vm)
    print(f"reset VM {vm.name}: " + ("disk deleted" if existed else "it had no disk yet"))
    return 0


def cmd_destroy(ctx: Context, a: argparse.Namespace) -> int:
    from . import lifecycle

    vm = targets.resolve(ctx, a.target)
    lifecycle.destroy(ctx, vm, force=a.force)
    print(f"destroyed VM {vm.name}")
    return 0


def cmd_status(ctx: Context, a: argparse.Namespace) -> int:
    vm = targets.resolve(ctx, a.target)
    st = status.status(ctx, vm)
    if a.json:
        _print_json(status.as_json(st))
    else:
        print(status.render_status(st))
        if st.agent_reachable and st.agent_port:
            print(_mcp_help(vm, store.load_config(vm), st.agent_port, st.agent_servers))
    return 0


def cmd_mcp_config(ctx: Context, a: argparse.Namespace) -> int:
    from . import agent_secrets, health, mcp_config

    vm = targets.resolve(ctx, a.target)
    cfg = store.load_config(vm)
    rt = store.load_runtime(vm)
    token = agent_secrets.read_token(vm)
    if token is None:
        raise NotFound(
            f"VM {vm.name} has no agent token yet",
            hint="'agent-vm start' makes one",
        )
    port = rt.agent_port or cfg.agent_port
    current, _ = state.effective(rt, vm.dir, ctx.layout.vm_lock(vm.name))
    servers = (
        health.agent_status(cfg.host_address, port, token) if current == VmState.RUNNING else None
    )
    conf = mcp_config.build(cfg, port, token, servers)
    if a.json:
        _print_json(conf.model_dump(mode="json"))
    else:
        print(mcp_config.render(conf))
    return 0


def cmd_list(ctx: Context, a: argparse.Namespace) -> int:
    rows = status.list_all(ctx)
    if a.json:
        _print_json(status.as_json(rows))
    else:
        print(status.render_list(rows))
    return 0


def _running(ctx: Context, vm: VmPaths) -> tuple[VmConfig, int]:
    cfg = store.load_config(vm)
    rt = store.load_runtime(vm)
    current, _ = state.effective(rt, vm.dir, ctx.layout.vm_lock(vm.name))
    if current != VmState.RUNNING:
        raise NotRunning(f"VM {vm.name} is {current.value}", hint="start it with 'agent-vm start'")
    return cfg, rt.ssh_port or cfg.ssh_port


def cmd_shell(ctx: Context, a: argparse.Namespace) -> int:
    from . import ssh, tools

    vm = targets.resolve(ctx, a.target)
    cfg, port = _running(ctx, vm)
    command = a.remote or None
    tty = command is None and sys.stdin.isatty()
    return tools.run_foreground(ssh.command_argv(vm, cfg, port, command, tty=tty))


def cmd_console(ctx: Context, a: argparse.Namespace) -> int:
    vm = targets.resolve(ctx, a.target)
    _running(ctx, vm)
    from . import console

    console.attach(vm.console_socket, vm.name)
    return 0


def cmd_logs(ctx: Context, a: argparse.Namespace) -> int:
    import signal

    from . import console, sanitize, ssh
    from .egress import verbs as egress_verbs

    vm = targets.resolve(ctx, a.target)
    raw = sanitize.check_raw(a.raw, sys.stdout)
    if a.previous:
        return _previous_logs(vm, raw)
    if a.network:
        return egress_verbs.network_logs(vm, a.follow, a.json)
    if a.json:
        raise InvalidInput("--json goes with --network")
    cfg = store.load_config(vm)
    rt = store.load_runtime(vm)
    current, _ = state.effective(rt, vm.dir, ctx.layout.vm_lock(vm.name))

    def shown() -> Callable[[bytes], bytes] | None:
        # The serial log and the journal are the guest's words.
        return None if raw else sanitize.Stream().feed

    journal = ["journalctl", "--no-pager", "-u", "agent-vm-agent.service"]
    port = rt.ssh_port or cfg.ssh_port
    if not a.follow:
        if vm.serial_log.exists():
            data = vm.serial_log.read_bytes()
            console.write_out(data if raw else sanitize.data(data).encode())
        else:
            print(f"VM {vm.name} has no serial log yet: it has not been started")
        if current == VmState.RUNNING:
            console.write_out(b"\n--- agent service journal ---\n")
            with console.copying(ssh.command_argv(vm, cfg, port, journal, tty=False), shown()):
                pass
        return 0
    with contextlib.ExitStack() as stack:
        if current == VmState.RUNNING:
            # The journal follows in the background while we follow the serial log.
            argv = ssh.command_argv(vm, cfg, port, [*journal, "-f"], tty=False)
            proc = stack.enter_context(console.copying(argv, shown()))
            stack.callback(proc.send_signal, signal.SIGTERM)
        with contextlib.suppress(KeyboardInterrupt):
            console.follow(vm.serial_log, transform=shown())
    return 0


def cmd_diff(ctx: Context, a: argparse.Namespace) -> int:
    from . import console, diff, sanitize

    vm = targets.resolve(ctx, a.target)
    cfg = store.load_config(vm)
    raw = sanitize.check_raw(a.raw, sys.stdout)
    rep, body = diff.report(ctx.layout, vm, cfg, stat=a.stat)
    if a.json:
        if not a.stat:
            rep.patch = body.decode("utf-8", "replace")
        _print_json(rep.model_dump(mode="json"))
        return 0
    console.write_out(diff.render(rep).encode())
    if body:
        console.write_out(b"\n" + (body if raw else sanitize.data(body).encode()))
    return 0


def cmd_pull(ctx: Context, a: argparse.Namespace) -> int:
    from . import pull, sanitize

    vm = targets.resolve(ctx, a.target)
    cfg = store.load_config(vm)
    res = pull.pull(
        ctx.layout,
        vm,
        cfg,
        into=a.into,
        force=a.force,
        include_uncommitted=a.include_uncommitted,
    )
    branch = sanitize.text(res.ref.removeprefix("refs/heads/"))
    if res.commit is None:
        print(f"nothing to pull: VM {vm.name}'s workspace has no commits beyond its base")
    elif res.old == res.commit:
        print(f"{branch} is already at {res.commit[:12]}: nothing new")
    else:
        since = f"{res.old[:12]}.." if res.old else "new branch at "
        print(f"pulled {res.commits} commit(s) into {branch} ({since}{res.commit[:12]})")
        if res.snapshot:
            print(f"  the files not committed in the workspace are commit {res.snapshot[:12]}")
        print(f"  review: git log -p {_q(branch)}  (the agent's work: read it before merging)")
    if res.left_uncommitted:
        warn(
            f"the agent left {res.left_uncommitted} file(s) uncommitted; they were not pulled "
            "('agent-vm pull --include-uncommitted' commits them on the pulled branch)"
        )
    return 0


def cmd_push(ctx: Context, a: argparse.Namespace) -> int:
    from . import push, sanitize

    vm = targets.resolve(ctx, a.target)
    cfg, port = _running(ctx, vm)
    res = push.push(vm, cfg, port)
    branch = sanitize.text(res.branch)
    if res.sent:
        print(f"the workspace now has {branch} at {res.commit[:12]} as origin/{branch}")
    else:
        print(f"nothing to push: the workspace already has {branch} ({res.commit[:12]})")
    return 0


def _previous_logs(vm: VmPaths, raw: bool) -> int:
    """Each start keeps the boot before it as serial.log.1 / runner.log.1."""
    from . import console, sanitize

    shown = False
    for what, path in (("serial log", vm.serial_log), ("runner log", vm.runner_log)):
        old = previous(path)
        if old.exists():
            print(f"--- previous boot's {what} ({old}) ---", flush=True)
            data = old.read_bytes()
            console.write_out(data if raw else sanitize.data(data).encode())
            shown = True
    if not shown:
        print(f"VM {vm.name} has no previous boot's logs")
    return 0


def cmd_doctor(ctx: Context, a: argparse.Namespace) -> int:
    from . import doctor

    report = doctor.run(ctx)
    if a.json:
        _print_json(report.model_dump(mode="json"))
    else:
        print(doctor.render(report))
    if not report.ok:
        raise HostNotReady("something blocks 'agent-vm up' (see the FAIL lines)")
    return 0


def _schemas() -> dict[str, type[BaseModel]]:
    from . import diff, doctor, mcp_config
    from .events import Event

    return {
        "status": status.VmStatus,
        "list": status.VmList,
        "doctor": doctor.DoctorReport,
        "create": status.VmStatus,
        "start": status.VmStatus,
        "mcp-config": mcp_config.McpConfig,
        "event": Event,
        "diff": diff.DiffReport,
    }


def cmd_schema(ctx: Context, a: argparse.Namespace) -> int:
    _print_json(_schemas()[a.output].model_json_schema())
    return 0


def cmd_secret(ctx: Context, a: argparse.Namespace) -> int:
    from .egress import verbs as egress_verbs

    return egress_verbs.cmd_secret(ctx, a)


COMMANDS = {
    "create": cmd_create,
    "start": cmd_start,
    "up": cmd_up,
    "stop": cmd_stop,
    "restart": cmd_restart,
    "update": cmd_update,
    "reset": cmd_reset,
    "suspend": cmd_suspend,
    "resume": cmd_resume,
    "destroy": cmd_destroy,
    "status": cmd_status,
    "mcp-config": cmd_mcp_config,
    "list": cmd_list,
    "shell": cmd_shell,
    "console": cmd_console,
    "logs": cmd_logs,
    "diff": cmd_diff,
    "pull": cmd_pull,
    "push": cmd_push,
    "doctor": cmd_doctor,
    "schema": cmd_schema,
    "secret": cmd_secret,
}
