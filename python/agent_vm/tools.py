"""The one place that runs external programs (through plumbum).

Everything else builds argument lists and calls `run`, `spawn` or
`run_foreground`; never a shell string, so no user value is ever parsed by
a shell.
"""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from .errors import CommandFailed, MissingTool

# Which package to install for each tool we run (for the error's hint).
PACKAGES = {
    "nix": "nix (https://nixos.org/download)",
    "git": "git",
    "ssh": "openssh-client",
    "ssh-keygen": "openssh-client",
    "qemu-img": "qemu-utils",
    "qemu-system-x86_64": "qemu-system-x86",
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
    # plumbum is imported on first use: it is most of the CLI's start-up
    # time, and `status`/`list` run no external program.
    from plumbum import local  # noqa: PLC0415
    from plumbum.commands import CommandNotFound  # noqa: PLC0415

    try:
        return local[tool]
    except CommandNotFound:
        pkg = PACKAGES.get(Path(tool).name, Path(tool).name)
        raise MissingTool(f"'{tool}' was not found on PATH", hint=f"install {pkg}") from None


def _with_env(cmd: Any, env: Mapping[str, str] | None) -> Any:
    return cmd.with_env(**env) if env else cmd


def run(
    argv: Sequence[str],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
    check: bool = True,
) -> Result:
    """Run to completion and capture output."""
    from plumbum.commands import ProcessTimedOut  # noqa: PLC0415

    cmd = _with_env(resolve(argv[0])[list(argv[1:])], env)
    kwargs: dict[str, Any] = {"retcode": None, "timeout": timeout}
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


def stream(
    argv: Sequence[str],
    on_stderr_line: Callable[[str], None],
    *,
    env: Mapping[str, str] | None = None,
) -> Result:
    """Run to completion, handing each stderr line to `on_stderr_line` as it
    arrives (for progress displays); stdout is captured."""
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
    cmd = _with_env(resolve(argv[0])[list(argv[1:])], env)
    proc: subprocess.Popen[bytes] = cmd.popen(
        stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
    )
    return proc


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


def environ_with(extra: Mapping[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    env.update(extra)
    return env
