"""Serial console attach, log following, and copying a program's output to
ours (each through the sanitiser when the caller gives one)."""

from __future__ import annotations

import contextlib
import os
import select
import socket
import subprocess
import sys
import termios
import threading
import time
import tty
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from .errors import NotRunning
from .fsutil import connect_unix

ESCAPE = b"\x1d"  # Ctrl-]


@contextlib.contextmanager
def _raw(fd: int) -> Iterator[None]:
    if not os.isatty(fd):
        yield
        return
    old = termios.tcgetattr(fd)
    try:
        tty.setraw(fd)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, old)


def attach(sock_path: Path, name: str) -> None:
    """Pump bytes between the terminal and the VM's serial socket until Ctrl-]."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        connect_unix(s, sock_path)
    except OSError:
        s.close()
        raise NotRunning(f"cannot attach to the console of VM {name} (is it running?)") from None
    sys.stderr.write(f"attached to {name}'s serial console; press Ctrl-] to detach\r\n")
    sys.stderr.flush()
    stdin, stdout = sys.stdin.fileno(), sys.stdout.fileno()
    with s, _raw(stdin):
        while True:
            ready, _, _ = select.select([s, stdin], [], [])
            if s in ready:
                data = s.recv(4096)
                if not data:
                    break
                os.write(stdout, data)
            if stdin in ready:
                data = os.read(stdin, 1024)
                if not data or ESCAPE in data:
                    s.sendall(data.split(ESCAPE, 1)[0])
                    break
                s.sendall(data)
    sys.stderr.write("\r\ndetached\r\n")


def follow(
    path: Path,
    stop: float | None = None,
    out: int | None = None,
    transform: Callable[[bytes], bytes] | None = None,
) -> None:
    """Print the file, then whatever is appended, until interrupted
    (each chunk through `transform`, the sanitiser, when given)."""
    fd_out = sys.stdout.fileno() if out is None else out
    while not path.exists():
        time.sleep(0.2)
    with open(path, "rb") as f:
        while stop is None or time.monotonic() < stop:
            chunk = f.read(65536)
            if chunk:
                os.write(fd_out, chunk if transform is None else transform(chunk))
            else:
                time.sleep(0.2)


def write_out(data: bytes) -> None:
    """Bytes to stdout, after whatever text was printed before them."""
    sys.stdout.flush()
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


@contextlib.contextmanager
def copying(
    argv: Sequence[str], transform: Callable[[bytes], bytes] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """Run `argv` with its output copied to ours (through `transform`) until
    it exits."""
    from . import tools  # noqa: PLC0415 - plumbum only for the verbs that run programs

    proc: subprocess.Popen[bytes] = tools.resolve(argv[0])[list(argv[1:])].popen(
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=None
    )

    def copy() -> None:
        assert proc.stdout is not None
        while chunk := os.read(proc.stdout.fileno(), 65536):
            write_out(chunk if transform is None else transform(chunk))

    thread = threading.Thread(target=copy, daemon=True)
    thread.start()
    try:
        yield proc
    finally:
        proc.wait()
        thread.join()
