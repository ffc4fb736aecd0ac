"""The per-VM network decision log: JSON lines of `models.NetworkDecision`.

The engine appends (one write per line, O_APPEND, so lines never tear);
`agent-vm logs --network` and `status` read. Every string in a line came
from the guest (host names, paths): rendering escapes
control characters (sanitize.line).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from pydantic import ValidationError

from .. import sanitize
from ..models import NetworkDecision


def append(path: Path, entry: NetworkDecision) -> None:
    line = entry.model_dump_json() + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def _parse(line: str) -> NetworkDecision | None:
    try:
        return NetworkDecision.model_validate_json(line)
    except ValidationError:
        return None  # a line cut short by a crash: skip it, keep the rest


def read(path: Path) -> Iterator[NetworkDecision]:
    try:
        f = open(path, encoding="utf-8", errors="replace")  # noqa: SIM115
    except FileNotFoundError:
        return
    with f:
        for line in f:
            entry = _parse(line)
            if entry is not None:
                yield entry


def follow(path: Path, poll: float = 0.3) -> Iterator[NetworkDecision]:
    """Every entry, then new ones as they are written (until interrupted)."""
    while not path.exists():
        time.sleep(poll)
    with open(path, encoding="utf-8", errors="replace") as f:
        pending = ""
        while True:
            chunk = f.readline()
            if not chunk:
                time.sleep(poll)
                continue
            pending += chunk
            if not pending.endswith("\n"):
                continue
            entry = _parse(pending)
            pending = ""
            if entry is not None:
                yield entry


@dataclass(frozen=True)
class Counts:
    allowed: int = 0
    denied: int = 0


def counts_since(path: Path, since: datetime | None) -> Counts:
    allowed = denied = 0
    for e in read(path):
        if since is not None and e.time < since:
            continue
        if e.decision == "denied":
            denied += 1
        else:
            allowed += 1
    return Counts(allowed, denied)


def render(e: NetworkDecision) -> str:
    where = f"{e.host}:{e.port}" + (e.path or "")
    extra = []
    if e.status is not None:
        extra.append(str(e.status))
    if e.bytes is not None:
        extra.append(f"{e.bytes}B")
    if e.secrets:
        extra.append("secrets " + ",".join(e.secrets))
    tail = f" ({', '.join(extra)})" if extra else ""
    stamp = e.time.astimezone().strftime("%Y-%m-%d %H:%M:%S")
    return sanitize.line(f"{stamp} {e.decision:8} {e.method} {where}{tail}: {e.reason}")
