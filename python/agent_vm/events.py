"""Typed trace events and the one place that renders them.

Commands never print progress themselves: they `emit` an event. The
reporter renders each event to stderr for a person (quiet by default, more
with -v, everything with -d; colour only on a TTY), or as JSON lines with
--log-format json, and always appends it to the VM's events.log so a failed
start can be investigated afterwards.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import UTC, datetime
from enum import IntEnum, StrEnum
from pathlib import Path
from typing import Any, TextIO

from pydantic import BaseModel, ConfigDict, Field


class Severity(IntEnum):
    DEBUG = 10
    INFO = 20
    NOTICE = 25
    WARNING = 30
    ERROR = 40


class EventKind(StrEnum):
    VM_CREATED = "vm.created"
    VM_STARTING = "vm.starting"
    VM_STARTED = "vm.started"
    VM_STOPPING = "vm.stopping"
    VM_STOPPED = "vm.stopped"
    VM_DESTROYED = "vm.destroyed"
    VM_FAILED = "vm.failed"
    VM_UPDATED = "vm.updated"
    VM_RESET = "vm.reset"
    VM_SUSPENDING = "vm.suspending"
    VM_SUSPENDED = "vm.suspended"
    VM_RESUMING = "vm.resuming"
    SNAPSHOT_DISCARDED = "snapshot.discarded"
    PROCESS_SPAWNED = "process.spawned"
    PROCESS_EXITED = "process.exited"
    PROCESS_SIGNALLED = "process.signalled"
    SSH_KEY_GENERATED = "ssh.key_generated"
    SSH_CONNECTING = "ssh.connecting"
    SSH_BANNER = "ssh.banner"
    SSH_CONNECTED = "ssh.connected"
    SSH_FAILED = "ssh.failed"
    BUILD_STARTED = "build.started"
    BUILD_PROGRESS = "build.progress"
    BUILD_COMPLETED = "build.completed"
    BUILD_FAILED = "build.failed"
    PORT_ALLOCATED = "port.allocated"
    WORKSPACE_CLONED = "workspace.cloned"
    WORKSPACE_REMOVED = "workspace.removed"
    WORKSPACE_LEFT_OUT = "workspace.left_out"
    AGENT_STARTING = "agent.starting"
    AGENT_HEALTHY = "agent.healthy"
    STAGE = "readiness.stage"
    ACCEL_FALLBACK = "accel.fallback"
    WARNING = "warning"


class Event(BaseModel):
    # Built when the first event is emitted: `status`/`list` emit none.
    model_config = ConfigDict(defer_build=True)

    time: datetime = Field(default_factory=lambda: datetime.now(UTC))
    kind: EventKind
    severity: Severity
    vm: str | None = None
    message: str
    data: dict[str, Any] = Field(default_factory=dict)


_SYMBOLS = {
    Severity.DEBUG: ("·", "\033[2m"),
    Severity.INFO: ("•", ""),
    Severity.NOTICE: ("✓", "\033[32m"),
    Severity.WARNING: ("!", "\033[33m"),
    Severity.ERROR: ("✗", "\033[31m"),
}


_LABEL = {Severity.WARNING: "warning", Severity.ERROR: "error"}


class Reporter:
    def __init__(self) -> None:
        self.threshold = Severity.WARNING
        self.json = False
        self.stream: TextIO = sys.stderr
        self.color = False
        self.live = False
        self.vm_logs: dict[str, Path] = {}

    def configure(
        self,
        *,
        verbose: bool = False,
        debug: bool = False,
        json_lines: bool = False,
        no_color: bool = False,
        stream: TextIO | None = None,
    ) -> None:
        self.stream = stream or sys.stderr
        self.threshold = Severity.DEBUG if debug else Severity.INFO if verbose else Severity.WARNING
        self.json = json_lines
        # A live progress line needs a terminal; colour needs one too and
        # must also not be turned off (NO_COLOR, --no-color).
        self.live = not json_lines and self.stream.isatty()
        self.color = self.live and not no_color and "NO_COLOR" not in os.environ

    def attach(self, vm: str, log_file: Path) -> None:
        """Also append every event about `vm` to `log_file`."""
        self.vm_logs[vm] = log_file

    def emit(
        self,
        kind: EventKind,
        message: str,
        *,
        severity: Severity = Severity.INFO,
        vm: str | None = None,
        **data: Any,
    ) -> Event:
        event = Event(kind=kind, severity=severity, vm=vm, message=message, data=data)
        line = event.model_dump_json()
        if vm is not None and vm in self.vm_logs:
            try:
                with open(self.vm_logs[vm], "a", encoding="utf-8") as f:
                    f.write(line + "\n")
            except OSError:
                pass  # the VM directory may just have been removed
        if severity >= self.threshold:
            if self.json:
                self.stream.write(line + "\n")
            else:
                self.stream.write(self._human(event) + "\n")
            self.stream.flush()
        return event

    def _human(self, event: Event) -> str:
        symbol, colour = _SYMBOLS[event.severity]
        prefix = f"[{event.vm}] " if event.vm and self.threshold <= Severity.INFO else ""
        if self.color:
            return f"{colour}{symbol}\033[0m {prefix}{event.message}"
        return (
            f"{prefix}{event.message}"
            if event.severity < Severity.WARNING
            else (f"{_LABEL[event.severity]}: {prefix}{event.message}")
        )

    def status_line(self, text: str) -> None:
        """A transient progress line (TTY only): overwritten by the next one."""
        if self.live:
            self.stream.write("\r\033[K" + text)
            self.stream.flush()

    def clear_status(self) -> None:
        if self.live:
            self.stream.write("\r\033[K")
            self.stream.flush()


REPORTER = Reporter()


def emit(
    kind: EventKind,
    message: str,
    *,
    severity: Severity = Severity.INFO,
    vm: str | None = None,
    **data: Any,
) -> Event:
    return REPORTER.emit(kind, message, severity=severity, vm=vm, **data)


def warn(message: str, *, vm: str | None = None, **data: Any) -> Event:
    return REPORTER.emit(EventKind.WARNING, message, severity=Severity.WARNING, vm=vm, **data)


def dumps(obj: Any) -> str:
    return json.dumps(obj, indent=2, default=str)
