"""The one place that runs external programs (through plumbum).

Everything else builds argument lists and calls `run`, `query`, `spawn`,
`stream` or `run_foreground`; never a shell string, so no user value is
ever parsed by a shell.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from .errors import CommandFailed, MissingTool

if TYPE_CHECKING:
    import subprocess

# subprocess, threading and plumbum are imported by the functions that run
# something: `agent-vm list` runs nothing and must start fast.

# Which package to install for each tool we run (for the error's hint).
PACKAGES = {
    "nix": "nix (https://nixos.org/download)",
    "git": "git",
    "ssh": "openssh-client",
    "ssh-keygen": "openssh-client",
    "qemu-img": "qemu-utils",
    "qemu-system-x86_64": "qemu-system-x86",
    "mkfs.ext4": "e2fsprogs",
    "debugfs": "e2fsprogs",
}


@dataclass(frozen=True)
class Result:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def resolve(tool: str) -> Any:
    """A plumbum command for `tool`, or MissingTool naming what to install."""
    from plumbum import local  # noqa: PLC0415
    from plumbum.commands import CommandNotFound  # noqa: PLC0415

    try:
        return local[tool]
    except CommandNotFound:
        raise _missing(tool) from None


def _missing(tool: str) -> MissingTool:
    pkg = PACKAGES.get(Path(tool).name, Path(tool).name)
    return MissingTool(f"'{tool}' was not found on PATH", hint=f"install {pkg}")


def _with_env(cmd: Any, env: Mapping[str, str] | None) -> Any:
    return cmd.with_env(**env) if env else cmd


def run(
    argv: Sequence[str],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
    check: bool = True,
    stdin: IO[bytes] | None = None,
) -> Result:
    """Run to completion and capture output (`stdin`: a file to read from)."""
    from plumbum.commands import ProcessTimedOut  # noqa: PLC0415

    cmd = _with_env(resolve(argv[0])[list(argv[1:])], env)
    kwargs: dict[str, Any] = {"retcode": None, "timeout": timeout}
    if stdin is not None:
        kwargs["stdin"] = stdin
    if cwd is not None:
        kwargs["cwd"] = str(cwd)
    try:
        code, out, err = cmd.run(**kwargs)
    except ProcessTimedOut:
        raise CommandFailed(f"'{argv[0]}' did not finish within {timeout:g}s") from None
    result = Result(tuple(argv), int(code), out or "", err or "")
    if check and not result.ok:
        last = (result.stderr.strip() or result.stdout.strip()).splitlines()
        raise CommandFailed(
            f"'{' '.join(argv[:2])}' failed with exit code {code}"
            + (f": {last[-1]}" if last else "")
        )
    return result


def query(argv: Sequence[str], *, cwd: Path | None = None) -> Result:
    """Ask a local program a quick read-only question (`git rev-parse …`) and
    capture the answer; a non-zero exit is a result, not an error.

    Without plumbum, whose import alone costs several times Python's own
    start-up: `status` asks git which repository it is in and must start
    fast. Output is decoded with surrogateescape, so a path in it that is
    not UTF-8 survives the round trip.
    """
    import subprocess  # noqa: PLC0415

    try:
        proc = subprocess.run(
            list(argv),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            errors="surrogateescape",
            check=False,
        )
    except FileNotFoundError:
        raise _missing(argv[0]) from None
    return Result(tuple(argv), proc.returncode, proc.stdout, proc.stderr)


def stream(
    argv: Sequence[str],
    on_stderr_line: Callable[[str], None],
    *,
    env: Mapping[str, str] | None = None,
) -> Result:
    """Run to completion, handing each stderr line to `on_stderr_line` as it
    arrives (for progress displays); stdout is captured."""
    import subprocess  # noqa: PLC0415
    import threading  # noqa: PLC0415

    cmd = _with_env(resolve(argv[0])[list(argv[1:])], env)
    proc = cmd.popen(stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out: list[bytes] = []
    reader = threading.Thread(target=lambda: out.append(proc.stdout.read()), daemon=True)
    reader.start()
    err: list[str] = []
    try:
        for raw in proc.stderr:
            line = raw.decode("utf-8", "replace")
            err.append(line)
            on_stderr_line(line)
        code = proc.wait()
    except BaseException:
        proc.terminate()
        proc.wait()
        raise
    reader.join()
    return Result(tuple(argv), int(code), b"".join(out).decode("utf-8", "replace"), "".join(err))


def spawn(
    argv: Sequence[str],
    *,
    log: IO[bytes],
    env: Mapping[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start a long-lived process in its own session, detached from our tty.

    It outlives us: our exit must not send it SIGHUP, and Ctrl-C in the
    terminal must not reach it (we stop it ourselves, cleanly).
    """
    import subprocess  # noqa: PLC0415

    cmd = _with_env(resolve(argv[0])[list(argv[1:])], env)
    proc: subprocess.Popen[bytes] = cmd.popen(
        stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
    )
    return proc


def run_to_file(
    argv: Sequence[str], out: Path, *, limit: int, timeout: float
) -> tuple[int, str, bool]:
    """Run with stdout into the new file `out` (0600). A process that writes
    more than `limit` bytes or runs past `timeout` is killed. Returns the
    exit code, stderr's last KiB, and whether it stayed within both."""
    import os  # noqa: PLC0415
    import subprocess  # noqa: PLC0415
    import threading  # noqa: PLC0415

    cmd = resolve(argv[0])[list(argv[1:])]
    proc = cmd.popen(stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    err: list[bytes] = []
    reader = threading.Thread(target=lambda: err.append(proc.stderr.read()), daemon=True)
    reader.start()
    expired = threading.Event()

    def expire() -> None:
        expired.set()
        proc.kill()

    watchdog = threading.Timer(timeout, expire)
    watchdog.start()
    written, within = 0, True
    try:
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            while chunk := proc.stdout.read1(1 << 20):
                written += len(chunk)
                if written > limit:
                    within = False
                    proc.kill()
                    break
                f.write(chunk)
    finally:
        code = proc.wait()
        watchdog.cancel()
        reader.join(timeout=5)
    text = b"".join(err)[-1024:].decode("utf-8", "replace")
    return int(code), text, within and not expired.is_set()


def run_foreground(argv: Sequence[str], *, env: Mapping[str, str] | None = None) -> int:
    """Run with our stdin/stdout/stderr (interactive ssh); return its exit code."""
    cmd = _with_env(resolve(argv[0])[list(argv[1:])], env)
    proc = cmd.popen(stdin=None, stdout=None, stderr=None)
    return int(proc.wait())


def have(tool: str) -> bool:
    try:
        resolve(tool)
    except MissingTool:
        return False
    return True
