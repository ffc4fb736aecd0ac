"""ssh: the command line pins the VM's key and host key (never
StrictHostKeyChecking=no), ignores the user's ssh config, and keeps remote
arguments' boundaries; the banner probe needs a real SSH version line."""

from __future__ import annotations

import shlex
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from agent_vm import ssh
from agent_vm.errors import CommandFailed
from agent_vm.paths import StateLayout, VmPaths
from pytest_subprocess import FakeProcess
from unit_fakes import vm_config

NAME = "main-0123abcd"


def vm_in(state_dir: Path) -> VmPaths:
    return StateLayout(state_dir).vm(NAME)


def options(argv: list[str]) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv) if a == "-o"]


def test_base_argv_pins_everything(tmp_path: Path) -> None:
    vm = vm_in(tmp_path)
    argv = ssh.base_argv(vm, vm_config(), 2345)
    assert argv[:3] == ["ssh", "-F", "none"]
    assert options(argv) == [
        f'IdentityFile="{vm.client_key}"',
        "IdentitiesOnly=yes",
        f'UserKnownHostsFile="{vm.known_hosts}"',
        "GlobalKnownHostsFile=/dev/null",
        "StrictHostKeyChecking=yes",
        f"HostKeyAlias=agent-vm-{NAME}",
        "ConnectTimeout=5",
        "LogLevel=ERROR",
        "BatchMode=yes",
    ]
    assert argv[argv.index("-p") + 1] == "2345"


def test_never_strict_host_key_checking_no(tmp_path: Path) -> None:
    vm = vm_in(tmp_path)
    cfg = vm_config()
    argvs = [
        ssh.base_argv(vm, cfg, 2222),
        ssh.base_argv(vm, cfg, 2222, batch=False),
        ssh.command_argv(vm, cfg, 2222, None, tty=True),
        ssh.command_argv(vm, cfg, 2222, ["ls"], tty=False),
    ]
    for argv in argvs:
        joined = " ".join(argv).lower()
        assert "stricthostkeychecking=no" not in joined
        assert "stricthostkeychecking=accept-new" not in joined
        assert "userknownhostsfile=/dev/null" not in joined
        assert options(argv).count("StrictHostKeyChecking=yes") == 1


def test_interactive_shell(tmp_path: Path) -> None:
    vm = vm_in(tmp_path)
    argv = ssh.command_argv(vm, vm_config(host_address="127.0.0.2"), 2222, None, tty=True)
    assert argv[-3:] == ["-t", "--", "dev@127.0.0.2"]
    assert "BatchMode=yes" not in options(argv)  # a person may be asked things


def test_destination_follows_double_dash(tmp_path: Path) -> None:
    vm = vm_in(tmp_path)
    argv = ssh.command_argv(vm, vm_config(), 2222, ["-oProxyCommand=x", "a"], tty=False)
    i = argv.index("--")
    assert argv[i - 1] == "-T" and argv[i + 1] == "dev@127.0.0.1"
    # Everything the user typed is after the destination, in one word.
    assert argv[i + 2 :] == ["-oProxyCommand=x a"]
    assert "-oProxyCommand=x" not in argv[:i]


@pytest.mark.parametrize(
    "command",
    [
        ["echo", "hello world"],
        ["sh", "-c", "echo 'hi' $HOME"],
        ["printf", "%s\\n", "a'b", 'c"d', "$(id)", "`id`", "x;y", "a&&b", "*", "~"],
        ["echo", ""],
        ["touch", "-- weird", "new\nline"],
        ["echo", "é ünï"],
    ],
)
def test_remote_command_keeps_argument_boundaries(tmp_path: Path, command: list[str]) -> None:
    vm = vm_in(tmp_path)
    argv = ssh.command_argv(vm, vm_config(), 2222, command, tty=False)
    remote = argv[argv.index("--") + 2 :]
    assert len(remote) == 1
    # The remote shell splits the string back into exactly the words given.
    assert shlex.split(remote[0]) == command
    # ... and a real POSIX shell agrees.
    echoed = subprocess.run(
        ["sh", "-c", "set -- " + remote[0] + '; for a in "$@"; do printf "%s\\0" "$a"; done'],
        capture_output=True,
        check=True,
    )
    assert echoed.stdout.decode().split("\0")[:-1] == command


def test_plain_words_are_not_quoted(tmp_path: Path) -> None:
    vm = vm_in(tmp_path)
    argv = ssh.command_argv(vm, vm_config(), 2222, ["ls", "-la", "/workspace"], tty=False)
    assert argv[-1] == "ls -la /workspace"


def test_paths_with_spaces_and_percent_are_quoted_for_ssh(tmp_path: Path) -> None:
    vm = vm_in(tmp_path / "st ate%h")
    opts = options(ssh.base_argv(vm, vm_config(), 2222))
    assert f'IdentityFile="{tmp_path}/st ate%%h/vms/{NAME}/ssh/id_ed25519"' in opts
    assert f'UserKnownHostsFile="{tmp_path}/st ate%%h/vms/{NAME}/ssh/known_hosts"' in opts


def test_real_ssh_parses_the_quoted_paths(tmp_path: Path) -> None:
    """Real ssh reads each quoted path as one path, with %% undone: -G prints
    the known_hosts file it would use, and -v the identity file it loads
    (identities load after the TCP connect, so a socket that accepts and
    closes is enough)."""
    vm = vm_in(tmp_path / "st ate%h")
    res = subprocess.run(
        [*ssh.base_argv(vm, vm_config(), 2222), "-G", "--", "dev@127.0.0.1"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    conf = res.stdout.splitlines()
    assert f"userknownhostsfile {vm.known_hosts}" in conf
    assert "stricthostkeychecking true" in conf
    assert f"hostkeyalias agent-vm-{NAME}" in conf
    assert "port 2222" in conf

    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        port = srv.getsockname()[1]

        def accept_and_close() -> None:
            conn, _ = srv.accept()
            conn.close()

        threading.Thread(target=accept_and_close, daemon=True).start()
        argv = ssh.command_argv(vm, vm_config(), port, ["true"], tty=False)
        res = subprocess.run(
            [argv[0], "-v", *argv[1:]], capture_output=True, text=True, timeout=20, check=False
        )
    assert f"debug1: identity file {vm.client_key} type -1" in res.stderr.splitlines()


def test_login_works_command_line(fp: FakeProcess, tmp_path: Path) -> None:
    vm = vm_in(tmp_path)
    cfg = vm_config()
    expected = [*ssh.base_argv(vm, cfg, 2222, connect_timeout=3), "-T", "--", "dev@127.0.0.1"]
    fp.register([*expected, "true"])
    assert ssh.login_works(vm, cfg, 2222, timeout=3) == (True, "")
    assert list(fp.calls[0]) == [*expected, "true"]


def test_login_failure_is_reported(fp: FakeProcess, tmp_path: Path) -> None:
    vm = vm_in(tmp_path)
    fp.register(["ssh", fp.any()], returncode=255, stderr="Host key verification failed.\n")
    ok, err = ssh.login_works(vm, vm_config(), 2222)
    assert not ok and err == "Host key verification failed."


def test_a_login_that_hangs_is_not_ready_yet(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cold guest under TCG can take longer than the login timeout: that is
    a retry for readiness, not an error that ends `start`."""
    vm = vm_in(tmp_path)

    def times_out(argv: list[str], **kwargs: object) -> None:
        raise CommandFailed(f"'ssh' did not finish within {kwargs['timeout']:g}s")

    monkeypatch.setattr(ssh.tools, "run", times_out)
    ok, err = ssh.login_works(vm, vm_config(), 2222, timeout=5)
    assert not ok and err == "'ssh' did not finish within 10s"


# --- banner --------------------------------------------------------------------


@pytest.fixture
def server() -> Iterator[tuple[socket.socket, list[bytes]]]:
    """A listening socket; each accepted connection is sent the next reply."""
    replies: list[bytes] = []
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()

    def serve() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            with conn:
                if replies:
                    conn.sendall(replies.pop(0))

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield srv, replies
    srv.close()


def test_banner_needs_an_ssh_version_line(server: tuple[socket.socket, list[bytes]]) -> None:
    srv, replies = server
    port = srv.getsockname()[1]
    replies += [b"SSH-2.0-OpenSSH_9.2\r\n", b"HTTP/1.0 200 OK\r\n", b""]
    assert ssh.banner("127.0.0.1", port, timeout=1)
    assert not ssh.banner("127.0.0.1", port, timeout=1)
    # Accepted then closed (QEMU's forward with nothing listening in the guest).
    assert not ssh.banner("127.0.0.1", port, timeout=1)


def test_banner_on_a_closed_port() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert not ssh.banner("127.0.0.1", port, timeout=0.5)
