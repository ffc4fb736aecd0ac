"""The argparse command line, completion, and the one place errors become exit codes."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import traceback
from collections.abc import Sequence
from enum import Enum
from pathlib import Path
from typing import Any, NoReturn

from . import __version__, sanitize, store
from .commands import COMMANDS
from .context import Context
from .errors import EXIT_INTERRUPTED, EXIT_OUTPUT_CLOSED, AgentVmError
from .events import REPORTER
from .models import AGENT_PORT_START, DEFAULT_ALLOW, PORT_RANGE, SSH_PORT_START, VmSettings
from .paths import StateLayout, check_state_dir, default_state_dir

DEFAULT_TIMEOUT = 120.0


def _state_dir_from(parsed: argparse.Namespace) -> Path:
    return Path(parsed.state_dir) if getattr(parsed, "state_dir", None) else default_state_dir()


def complete_vms(prefix: str, parsed_args: argparse.Namespace, **_: Any) -> list[str]:
    """VM names in the state dir plus branches of the current repository."""
    from . import gitops  # noqa: PLC0415 - only completion asks git here

    names = store.vm_names(StateLayout(_state_dir_from(parsed_args)))
    with contextlib.suppress(AgentVmError):
        names += gitops.branches(gitops.repo_root(Path.cwd()))
    return [n for n in names if n.startswith(prefix)]


def complete_branches(prefix: str, **_: Any) -> list[str]:
    from . import gitops  # noqa: PLC0415 - only completion asks git here

    try:
        return [b for b in gitops.branches(gitops.repo_root(Path.cwd())) if b.startswith(prefix)]
    except AgentVmError:
        return []


def _int_arg(lo: int, hi: int) -> Any:
    """An argparse type for a whole number in [lo, hi] (argparse names the
    flag in front of the message)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number, not {text!r}") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"must be between {lo} and {hi}, not {value}")
        return value

    return parse


PORT = _int_arg(*PORT_RANGE)


def _settings_args(p: argparse.ArgumentParser, update: bool) -> None:
    """One flag per VmSettings field: its type, range, choices and help come
    from the model. No argparse defaults: None means "not given", so `up` and
    `update` can tell which settings to apply to an existing VM."""
    for name, info in VmSettings.model_fields.items():
        flag = VmSettings.flag(name)
        default = info.default.value if isinstance(info.default, Enum) else info.default
        shown = "unchanged" if update else ("none" if default is None else str(default))
        kwargs: dict[str, Any] = {"dest": name, "help": f"{info.description} (default {shown})"}
        ann = info.annotation
        if ann is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif isinstance(ann, type) and issubclass(ann, Enum):
            kwargs["choices"] = [m.value for m in ann]
        elif ann is int:
            kwargs["type"] = _int_arg(*VmSettings.int_range(name))
        p.add_argument(flag, **kwargs)


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, not {text}")
    return value


def _target(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "target",
        nargs="?",
        metavar="BRANCH",
        help="branch or VM name (default: the current branch)",
    ).completer = complete_vms  # type: ignore[attr-defined]


def _port_args(p: argparse.ArgumentParser, update: bool) -> None:
    if update:
        p.add_argument("--port", type=PORT, help="agent port (pinned: exactly this one)")
        p.add_argument("--ssh-port", type=PORT, help="SSH port (pinned: exactly this one)")
        return
    p.add_argument(
        "--port",
        type=PORT,
        help=f"agent port: the first free one from this (default {AGENT_PORT_START})",
    )
    p.add_argument(
        "--ssh-port",
        type=PORT,
        help=f"SSH port: the first free one from this (default {SSH_PORT_START})",
    )
    p.add_argument(
        "--pin",
        action="store_true",
        help="use exactly --port/--ssh-port; fail instead of picking another if taken",
    )


def _allow_args(p: argparse.ArgumentParser, update: bool) -> None:
    """The egress allowlist (with --network allow): a list, so not a VmSettings flag."""
    p.add_argument(
        "--allow",
        action="append",
        metavar="PATTERN",
        help="with --network allow: a name or *.suffix, optionally :port (default ports 443 "
        "and 80); repeat for more; replaces the list"
        + ("" if update else f" (default {' '.join(DEFAULT_ALLOW)})"),
    )
    p.add_argument(
        "--allow-file", metavar="PATH", help="allowlist patterns, one a line (# comments)"
    )
    if update:
        p.add_argument(
            "--add-allow", action="append", default=[], metavar="PATTERN", help="add to the list"
        )
        p.add_argument(
            "--remove-allow",
            action="append",
            default=[],
            metavar="PATTERN",
            help="remove from the list",
        )


def _secret_parser(sub: Any) -> None:
    p = sub.add_parser(
        "secret", help="credentials the VM's proxy adds on the way out (the guest never has them)"
    )
    verbs = p.add_subparsers(dest="secret_verb", metavar="ACTION", required=True)
    add = verbs.add_parser(
        "add",
        usage="agent-vm secret add [BRANCH] NAME --domain PATTERN… [--header H] "
        "(--from-file PATH | --from-env VAR)",
        help="add or replace a secret",
    )
    add.add_argument("words", nargs="+", metavar="[BRANCH] NAME", help="NAME: the guest's variable")
    add.add_argument(
        "--domain",
        action="append",
        required=True,
        metavar="PATTERN",
        help="where the secret may go (allowlist syntax); repeat for more",
    )
    add.add_argument("--header", help="set this request header to the value on those domains")
    source = add.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--from-file", metavar="PATH", help="read the value from PATH at each start"
    )
    source.add_argument("--from-env", metavar="VAR", help="store the value of $VAR now (0600)")
    rm = verbs.add_parser(
        "remove", usage="agent-vm secret remove [BRANCH] NAME", help="remove a secret"
    )
    rm.add_argument("words", nargs="+", metavar="[BRANCH] NAME")
    ls = verbs.add_parser("list", help="the VM's secrets (names, domains, sources; never values)")
    _target(ls)
    ls.add_argument("--json", action="store_true")


def _create_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--branch", "-b", help="branch to make the VM for (default: current)"
    ).completer = complete_branches  # type: ignore[attr-defined]
    _settings_args(p, update=False)
    _port_args(p, update=False)
    _allow_args(p, update=False)
    p.add_argument("--workspace", help="share this existing directory instead of a per-branch copy")
    _mcp_env(p)
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def _mcp_env(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--mcp-env",
        metavar="FILE",
        help="NAME=value lines for the MCP servers (API tokens): copied into the VM's state "
        "and handed in at boot, readable in the guest only by the servers' own user",
    )


def _foreground(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--foreground",
        action="store_true",
        help="stay until the VM stops; SIGTERM powers it down (for systemd units)",
    )


def _grace(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--grace",
        type=_positive,
        default=None,
        help="seconds to wait for ACPI powerdown before SIGTERM (default 30)",
    )


def _raw(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--raw",
        action="store_true",
        help="the guest's bytes unchanged, to a pipe or file only (default: control "
        "characters shown escaped)",
    )


class _Parser(argparse.ArgumentParser):
    """argparse with usage errors as one line and a hint, like every other error."""

    def error(self, message: str) -> NoReturn:
        verb = self.prog.removeprefix("agent-vm").strip()
        where = f"{verb}: " if verb else ""
        self.exit(
            2,
            f"agent-vm: error: {where}{message}\nagent-vm: hint: see '{self.prog} --help'\n",
        )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="agent-vm",
        description="Per-branch NixOS virtual machines for AI coding agents.",
    )
    parser.add_argument("--version", action="version", version=f"agent-vm {__version__}")
    parser.add_argument("--state-dir", help="where VMs live (default: the user state dir)")
    parser.add_argument("-v", "--verbose", action="store_true", help="show progress events")
    parser.add_argument(
        "-d", "--debug", action="store_true", help="show every event and tracebacks"
    )
    parser.add_argument(
        "-t",
        "--timeout",
        type=_positive,
        default=DEFAULT_TIMEOUT,
        help="seconds to wait for a VM to become ready (default 120)",
    )
    parser.add_argument("--no-color", action="store_true", help="never use colour")
    parser.add_argument(
        "--log-format",
        choices=["human", "json"],
        default="human",
        help="how events are written to stderr",
    )
    sub = parser.add_subparsers(dest="verb", metavar="COMMAND", required=True)

    p = sub.add_parser("create", help="make a VM for a branch (does not start it)")
    _create_args(p)
    p = sub.add_parser(
        "up",
        help="create the VM if missing (else apply the settings given), then start it",
    )
    _create_args(p)
    _foreground(p)
    p = sub.add_parser("start", help="build and boot the VM, wait until it is ready")
    _target(p)
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    _foreground(p)
    p = sub.add_parser("stop", help="power the VM down (ACPI, then SIGTERM, then SIGKILL)")
    _target(p)
    _grace(p)
    p = sub.add_parser("restart", help="stop (if running) and start")
    _target(p)
    _grace(p)
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p = sub.add_parser("update", help="change settings; they apply on the next start")
    _target(p)
    _settings_args(p, update=True)
    _port_args(p, update=True)
    _allow_args(p, update=True)
    _mcp_env(p)
    p = sub.add_parser(
        "suspend", help="save the running VM (memory, devices) beside its disk and stop QEMU"
    )
    _target(p)
    p = sub.add_parser("resume", help="continue a suspended VM where it was")
    _target(p)
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p = sub.add_parser("reset", help="delete the VM's disk, keep config and workspace")
    _target(p)
    p = sub.add_parser("destroy", help="stop the VM and delete it and its workspace")
    _target(p)
    p.add_argument(
        "--force",
        action="store_true",
        help="delete even if the workspace has work that exists nowhere else",
    )
    p = sub.add_parser("status", help="state, pid, uptime, ports and reachability")
    _target(p)
    p.add_argument("--json", action="store_true")
    p = sub.add_parser(
        "mcp-config", help="MCP client configuration for the VM's agent port (with its token)"
    )
    _target(p)
    p.add_argument("--json", action="store_true", help="print it as JSON")
    p = sub.add_parser("list", help="every VM in the state dir")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("shell", help="SSH into the VM, or run a command: shell BRANCH -- CMD…")
    _target(p)
    p = sub.add_parser("console", help="attach to the serial console (Ctrl-] detaches)")
    _target(p)
    p = sub.add_parser("logs", help="serial log, and the agent service journal when up")
    _target(p)
    p.add_argument("-f", "--follow", action="store_true")
    p.add_argument("--network", action="store_true", help="the egress proxy's decisions instead")
    p.add_argument("--json", action="store_true", help="with --network: JSON lines")
    p.add_argument(
        "--previous",
        action="store_true",
        help="the boot before this one: its serial and runner logs",
    )
    _raw(p)
    p = sub.add_parser(
        "diff", help="what the agent changed since the workspace was made: commits, files, patch"
    )
    _target(p)
    p.add_argument("--stat", action="store_true", help="a diffstat instead of the patch")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    _raw(p)
    p = sub.add_parser(
        "pull", help="bring the agent's commits into your repository as branch agent/BRANCH"
    )
    _target(p)
    p.add_argument(
        "--into", metavar="REF", help="the branch to set instead of agent/BRANCH"
    ).completer = complete_branches  # type: ignore[attr-defined]
    p.add_argument(
        "--force", action="store_true", help="overwrite the branch even if not a fast-forward"
    )
    p.add_argument(
        "--include-uncommitted",
        action="store_true",
        help="also commit the files the agent did not commit (as agent-vm) on the pulled branch",
    )
    p = sub.add_parser(
        "push", help="hand your branch's newer commits to the agent as origin/BRANCH (VM running)"
    )
    _target(p)
    _secret_parser(sub)
    p = sub.add_parser("doctor", help="check this host: nix, KVM, tools, ports, state dir")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("schema", help="print the JSON schema of a --json output")
    p.add_argument(
        "output",
        choices=["status", "list", "doctor", "create", "start", "mcp-config", "event", "diff"],
    )
    return parser


def _split_command(argv: list[str]) -> tuple[list[str], list[str]]:
    """`shell BRANCH -- CMD…`: everything after the first `--` is the command."""
    if "shell" in argv and "--" in argv and argv.index("--") > argv.index("shell"):
        i = argv.index("--")
        return argv[:i], argv[i + 1 :]
    return argv, []


def _parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    args_list, command = _split_command(argv)
    args = parser.parse_args(args_list)
    if command and args.verb != "shell":
        # `logs shell -- x`: "shell" named the VM, and logs takes no command.
        # Parsed whole, argparse refuses the extra words as anywhere else.
        args = parser.parse_args(argv)
        command = []
    args.remote = command
    return args


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    if "_ARGCOMPLETE" in os.environ:  # only the shell's completion hook pays for it
        import argcomplete  # noqa: PLC0415

        argcomplete.autocomplete(parser)
    args = _parse(parser, list(sys.argv[1:] if argv is None else argv))
    REPORTER.configure(
        verbose=args.verbose,
        debug=args.debug,
        no_color=args.no_color,
        json_lines=args.log_format == "json",
    )
    try:
        state_dir = check_state_dir(_state_dir_from(args))
    except AgentVmError as exc:
        _report_error(exc, args.debug)
        return exc.exit_code
    ctx = Context(layout=StateLayout(state_dir), timeout=args.timeout)
    # SIGTERM/SIGHUP unwind like Ctrl-C, so a starting VM is cleaned up.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)
    # From here on Ctrl-C unwinds (cleaning up what a command started).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        code = COMMANDS[args.verb](ctx, args)
        sys.stdout.flush()  # a closed pipe shows here, not as Python exits
        return code
    except AgentVmError as exc:
        _report_error(exc, args.debug)
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("agent-vm: interrupted\n")
        return EXIT_INTERRUPTED
    except BrokenPipeError as exc:
        # `agent-vm list | head -1`: the reader has all it wanted.
        return EXIT_OUTPUT_CLOSED if _output_closed() else _internal_error(exc, args.debug)
    except Exception as exc:
        return _internal_error(exc, args.debug)


def _internal_error(exc: Exception, debug: bool) -> int:
    """A bug: still one line, the traceback only with -d."""
    if debug:
        traceback.print_exc()
    sys.stderr.write(
        f"agent-vm: internal error: {type(exc).__name__}: {exc} (rerun with -d for the traceback)\n"
    )
    return 1


def _output_closed() -> bool:
    """Is stdout a pipe whose reader has gone? If so, point it at /dev/null,
    so that the output still buffered is dropped quietly as Python exits, as
    coreutils end quietly on SIGPIPE."""
    import select  # noqa: PLC0415 - only here

    try:
        fd = sys.stdout.fileno()
        poller = select.poll()
        poller.register(fd, select.POLLOUT)
        if not any(ev & select.POLLERR for _, ev in poller.poll(0)):
            return False
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, fd)
        os.close(devnull)
    except (OSError, ValueError):  # not a real file (captured in tests)
        return False
    return True


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _report_error(exc: AgentVmError, debug: bool) -> None:
    # A message can carry guest-written text (a serial log's tail, a branch
    # or file name, the guest's stderr): shown escaped, never interpreted.
    if debug:
        traceback.print_exc()
    if exc.detail:
        sys.stderr.write(sanitize.text(exc.detail.rstrip()) + "\n")
    sys.stderr.write(f"agent-vm: error: {sanitize.text(exc.message)}\n")
    if exc.hint:
        sys.stderr.write(f"agent-vm: hint: {sanitize.text(exc.hint)}\n")
