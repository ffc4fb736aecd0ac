"""Is this pid still *our* QEMU?

A pid can be reused by an unrelated process after QEMU dies. Before we
signal anything we compare the start time recorded at launch (field 22 of
/proc/PID/stat, in clock ticks since boot) and check that its command line
names the VM's directory.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

from .events import EventKind, emit


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # comm (field 2) may contain spaces and parentheses: split after the last ')'.
    return raw[raw.rindex(")") + 2 :].split()


def start_time(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return int(fields[19]) if fields else None


def is_alive(pid: int) -> bool:
    fields = _stat_fields(pid)
    # A zombie has exited; only its parent's wait is missing.
    return fields is not None and fields[0] not in ("Z", "X")


def cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return []
    return [a.decode("utf-8", "surrogateescape") for a in raw.split(b"\0") if a]


def is_ours(pid: int | None, recorded_start: int | None, vm_dir: Path) -> bool:
    if pid is None or recorded_start is None or not is_alive(pid):
        return False
    if start_time(pid) != recorded_start:
        return False
    marker = str(vm_dir)
    return any(marker in arg for arg in _settled_cmdline(pid))


EXEC_SETTLE = 0.5


def _settled_cmdline(pid: int) -> list[str]:
    """The command line, waiting out the moment around an exec.

    Right after a spawn (or while the runner execs QEMU) the kernel has not
    yet set up the new program's arguments and cmdline reads empty; taking
    that as "not ours" would leave a QEMU running.
    """
    deadline = time.monotonic() + EXEC_SETTLE
    args = cmdline(pid)
    while not args and is_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.01)
        args = cmdline(pid)
    return args


def signal_if_ours(pid: int, recorded_start: int, vm_dir: Path, sig: signal.Signals) -> bool:
    """Send `sig` only if the pid is still our QEMU; True if sent."""
    if not is_ours(pid, recorded_start, vm_dir):
        return False
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return False
    return True


def reap(pid: int) -> None:
    """Collect the exit status if the process is our child (no zombies)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reap(pid)
        if not is_alive(pid):
            return True
        time.sleep(0.05)
    reap(pid)
    return not is_alive(pid)


def terminate(pid: int, recorded_start: int, vm_dir: Path, grace_term: float = 10.0) -> bool:
    """SIGTERM, then SIGKILL, our QEMU (or runner); True once it is gone."""
    for sig, wait in ((signal.SIGTERM, grace_term), (signal.SIGKILL, 5.0)):
        if not signal_if_ours(pid, recorded_start, vm_dir, sig):
            reap(pid)
            return True
        emit(
            EventKind.PROCESS_SIGNALLED,
            f"sent {sig.name} to QEMU (pid {pid})",
            vm=vm_dir.name,
            pid=pid,
            signal=sig.name,
        )
        if wait_gone(pid, wait):
            return True
    return False


def die_with_parent(parent: int) -> bool:
    """Have the kernel SIGTERM this process when `parent` exits
    (PR_SET_PDEATHSIG), and say whether `parent` is still our parent.

    False means it died before the request took effect (we were
    reparented): the caller must exit now, or it would outlive it for good.
    """
    import ctypes  # noqa: PLC0415 - only the egress engine needs it

    pr_set_pdeathsig = 1
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(pr_set_pdeathsig, int(signal.SIGTERM), 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return os.getppid() == parent
