"""Every failure the user can meet, one exception class per kind.

Each class carries its exit code; `cli.main` is the only place that turns an
exception into a message and an exit status, so the table in the README is
this file.
"""

from __future__ import annotations

from typing import ClassVar


class AgentVmError(Exception):
    """Base class: a one-line message and, optionally, what to do about it."""

    exit_code: ClassVar[int] = 1
    kind: ClassVar[str] = "error"

    def __init__(self, message: str, hint: str | None = None, detail: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        # Multi-line context (a log tail) shown under the message.
        self.detail = detail


class InvalidInput(AgentVmError):
    exit_code = 2
    kind = "invalid-input"


class NotFound(AgentVmError):
    exit_code = 3
    kind = "not-found"


class AlreadyExists(AgentVmError):
    exit_code = 4
    kind = "already-exists"


class AlreadyRunning(AgentVmError):
    exit_code = 5
    kind = "already-running"


class NotRunning(AgentVmError):
    exit_code = 6
    kind = "not-running"


class StartTimeout(AgentVmError):
    exit_code = 7
    kind = "timeout"


class BuildFailed(AgentVmError):
    exit_code = 8
    kind = "build-failed"


class MissingTool(AgentVmError):
    exit_code = 9
    kind = "missing-tool"


class GitError(AgentVmError):
    exit_code = 10
    kind = "git"


class CorruptState(AgentVmError):
    exit_code = 11
    kind = "corrupt-state"


class PortUnavailable(AgentVmError):
    exit_code = 12
    kind = "port-unavailable"


class UnsavedWork(AgentVmError):
    exit_code = 13
    kind = "unsaved-work"


class Busy(AgentVmError):
    exit_code = 14
    kind = "busy"


class GuestFailed(AgentVmError):
    exit_code = 15
    kind = "guest-failed"


class StopFailed(AgentVmError):
    exit_code = 16
    kind = "stop-failed"


class CommandFailed(AgentVmError):
    """An external tool failed in a way no more specific class describes."""

    exit_code = 17
    kind = "command-failed"


class HostNotReady(AgentVmError):
    """doctor found something that blocks `agent-vm up`."""

    exit_code = 18
    kind = "host-not-ready"


class FlakeNotFound(AgentVmError):
    """No agent-vm flake to build VMs from (a CLI installed without one,
    or AGENT_VM_FLAKE naming a directory without a flake.nix)."""

    exit_code = 19
    kind = "flake-not-found"


class SnapshotStale(AgentVmError):
    """A suspended VM's snapshot no longer matches its disks or runner: it
    is refused, never restored."""

    exit_code = 20
    kind = "snapshot-stale"


class SuspendRefused(AgentVmError):
    """QEMU cannot save this VM (a mounted 9p share, a virtiofsd without
    migration support) or the save failed; the VM runs on."""

    exit_code = 21
    kind = "suspend-refused"


class NoSpace(AgentVmError):
    """The file system holding the state directory is full (or the user's
    quota is used up); the message names it."""

    exit_code = 22
    kind = "no-space"


# Ctrl-C (or SIGTERM/SIGHUP): cli.main unwinds what the command started and
# exits with this, not with an exception class (the interrupt is
# KeyboardInterrupt, raised anywhere).
EXIT_INTERRUPTED = 130

# Not a failure: the reader of our output went away (`agent-vm list | head
# -1`); exit quietly with the status of a program killed by SIGPIPE, as
# coreutils do.
EXIT_OUTPUT_CLOSED = 141

ALL_ERRORS: tuple[type[AgentVmError], ...] = (
    InvalidInput,
    NotFound,
    AlreadyExists,
    AlreadyRunning,
    NotRunning,
    StartTimeout,
    BuildFailed,
    MissingTool,
    GitError,
    CorruptState,
    PortUnavailable,
    UnsavedWork,
    Busy,
    GuestFailed,
    StopFailed,
    CommandFailed,
    HostNotReady,
    FlakeNotFound,
    SnapshotStale,
    SuspendRefused,
    NoSpace,
)
