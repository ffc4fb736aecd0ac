"""SSH into a VM with its own key and its pinned host key.

Never StrictHostKeyChecking=no: the guest's host key was made by us at
create time and is the only one accepted.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence

from . import tools
from .errors import CommandFailed
from .keys import host_alias
from .models import GUEST_USER, VmConfig
from .paths import VmPaths


def base_argv(
    vm: VmPaths, cfg: VmConfig, port: int, *, batch: bool = True, connect_timeout: int = 5
) -> list[str]:
    argv = [
        "ssh",
        "-F",
        "none",  # the user's ~/.ssh/config must not redirect or weaken this
        "-o",
        f"IdentityFile={config_path(str(vm.client_key))}",
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        f"UserKnownHostsFile={config_path(str(vm.known_hosts))}",
        "-o",
        "GlobalKnownHostsFile=/dev/null",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        f"HostKeyAlias={host_alias(vm.name)}",
        "-o",
        f"ConnectTimeout={connect_timeout}",
        "-o",
        "LogLevel=ERROR",
        "-p",
        str(port),
    ]
    if batch:
        argv += ["-o", "BatchMode=yes"]
    return argv


def config_path(path: str) -> str:
    """A path as an ssh option value: ssh splits these on spaces and expands

    %-tokens (and ${VAR}, which has no escape: StateLayout refuses such dirs).
    """
    return '"' + path.replace("%", "%%") + '"'


def command_argv(
    vm: VmPaths, cfg: VmConfig, port: int, command: Sequence[str] | None, *, tty: bool
) -> list[str]:
    argv = base_argv(vm, cfg, port, batch=command is not None)
    argv += ["-t" if tty else "-T", "--", f"{GUEST_USER}@{cfg.host_address}"]
    if command:
        # ssh joins its arguments with spaces for the remote shell; pass one
        # pre-quoted string so arguments keep their boundaries.
        argv.append(" ".join(_sh_quote(a) for a in command))
    return argv


def _sh_quote(arg: str) -> str:
    if arg and all(c.isalnum() or c in "@%+=:,./-_" for c in arg):
        return arg
    return "'" + arg.replace("'", "'\\''") + "'"


def banner(host: str, port: int, timeout: float = 1.0) -> bool:
    """Does an SSH server answer on host:port?

    QEMU's forward accepts the TCP connection even while nothing listens in
    the guest and then closes it, so a connect alone proves nothing; the
    server's version line does.
    """
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.settimeout(timeout)
            data = s.recv(64)
    except OSError:
        return False
    return data.startswith(b"SSH-")


def login_works(vm: VmPaths, cfg: VmConfig, port: int, timeout: int = 5) -> tuple[bool, str]:
    argv = base_argv(vm, cfg, port, connect_timeout=timeout)
    argv += ["-T", "--", f"{GUEST_USER}@{cfg.host_address}", "true"]
    try:
        res = tools.run(argv, check=False, timeout=timeout + 5)
    except CommandFailed as exc:
        # Only the timeout raises here (check=False): a guest too slow to
        # finish a login yet (a cold TCG guest) is "not yet", not a failure.
        return False, exc.message
    return res.ok, res.stderr.strip()
