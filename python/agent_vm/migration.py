"""Saving a whole VM to a file and loading it back, over QMP.

The guest's RAM already is a file in the VM dir (`memory-backend-file,
share=on`, lib/qemu-args.nix), so with the `x-ignore-shared` capability
the migration stream holds only device state: the VM is stopped, QEMU
writes that state to a `file:` URI and quits, and the RAM file stays where
it is. A resume starts QEMU with `-incoming defer` on the same RAM file
(the runner does, for AGENT_VM_INCOMING=defer), sets the same capability
and loads the device state with `migrate-incoming`. Measured against
QEMU's other ways (mapped-ram, the classic stream, mapped-ram with multifd)
in docs/benchmarks.md: 30-100 times faster to save and to load here.

The URI is relative: QEMU runs in the VM directory (the runner `cd`s
there), and a state dir with a comma in its path would otherwise be
parsed as a URI option.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Literal

from .errors import GuestFailed, SuspendRefused
from .qmp import Qmp, QmpError

# The capabilities both sides must agree on.
CAPABILITIES = {"x-ignore-shared": True}
POLL = 0.02


def _set_capabilities(q: Qmp) -> None:
    q.execute(
        "migrate-set-capabilities",
        capabilities=[{"capability": k, "state": v} for k, v in CAPABILITIES.items()],
    )


def refusal(reasons: list[str]) -> SuspendRefused:
    """QEMU's migration blockers, in the user's terms."""
    text = "; ".join(reasons)
    if "VirtFS" in text or "9p" in text:
        return SuspendRefused(
            "QEMU cannot suspend this VM while its 9p workspace share is mounted in the guest "
            f"(QEMU: {text})",
            hint="a VM made with '--workspace-mode disk' can be suspended",
        )
    if "vhost-user-fs" in text or "virtiofs" in text:
        return SuspendRefused(
            "QEMU cannot suspend this VM: its virtiofs workspace share does not support "
            f"migration with this QEMU and virtiofsd (QEMU: {text})",
            hint="a VM made with '--workspace-mode disk' can be suspended",
        )
    return SuspendRefused(f"QEMU cannot suspend this VM: {text}")


def blockers(q: Qmp) -> list[str]:
    """Why QEMU would refuse to save the VM now (QEMU >= 6: `blocked-reasons`)."""
    info: dict[str, Any] = q.execute("query-migrate")
    return [str(r) for r in info.get("blocked-reasons", [])]


def accelerator(q: Qmp) -> Literal["kvm", "tcg"]:
    """What QEMU really runs on (the runner's `auto` may have fallen back)."""
    kvm: dict[str, Any] = q.execute("query-kvm")
    return "kvm" if kvm.get("enabled") else "tcg"


def _wait(q: Qmp, deadline: float) -> dict[str, Any]:
    while True:
        info: dict[str, Any] = q.execute("query-migrate")
        if info.get("status") in ("completed", "failed", "cancelled"):
            return info
        if time.monotonic() >= deadline:
            q.execute("migrate_cancel")
            return {"status": "failed", "error-desc": "timed out"}
        time.sleep(POLL)


def _run(q: Qmp, command: str, relative: Path, timeout: float) -> dict[str, Any]:
    """Set the capabilities, start `command` (migrate or migrate-incoming)
    on the file and wait for its end; a QMP error is a failed migration."""
    try:
        _set_capabilities(q)
        q.execute(command, uri=f"file:{relative}")
        return _wait(q, time.monotonic() + timeout)
    except QmpError as exc:
        return {"status": "failed", "error-desc": str(exc)}


def _why(info: dict[str, Any]) -> str:
    return str(info.get("error-desc", info["status"]))


def save(q: Qmp, relative: Path, timeout: float) -> None:
    """Stop the guest and write its state to `relative` (in QEMU's working
    directory). On failure the guest is continued and SuspendRefused raised.
    The caller has checked `blockers` first."""
    q.execute("stop")
    info = _run(q, "migrate", relative, timeout)
    if info["status"] != "completed":
        q.execute("cont")
        raise SuspendRefused(f"saving the VM failed: {_why(info)}; it runs on")


def load(q: Qmp, relative: Path, timeout: float) -> None:
    """Load the state a paused `-incoming defer` QEMU was started for. The
    guest stays paused: `cont` is the caller's, once it has let go of the
    snapshot."""
    info = _run(q, "migrate-incoming", relative, timeout)
    if info["status"] != "completed":
        raise GuestFailed(f"QEMU could not load the snapshot: {_why(info)}")
