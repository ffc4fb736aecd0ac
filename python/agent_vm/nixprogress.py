"""Reading `nix build --log-format internal-json` as it streams.

Nix writes one `@nix {json}` line per activity start/stop/result and per
message. We keep just enough to show one progress line (derivations done of
expected, the one being built) and, when the build fails, the failing
derivation's last log lines.
"""

from __future__ import annotations

import json
import re
from collections import deque
from dataclasses import dataclass, field

# From Nix's logging.hh (ActivityType / ResultType).
ACT_BUILD = 105
RES_BUILD_LOG_LINE = 101
RES_PROGRESS = 105
PREFIX = "@nix "
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def strip_ansi(text: str) -> str:
    """Nix's messages without their colour codes (internal-json keeps them)."""
    return _ANSI.sub("", text)


def _drv_name(text: str) -> str:
    # "building '/nix/store/<hash>-name.drv'" -> "name"
    path = text.split("'")[1] if "'" in text else text
    base = path.rsplit("/", 1)[-1]
    base = base.split("-", 1)[1] if "-" in base else base
    return base.removesuffix(".drv")


@dataclass
class BuildProgress:
    done: int = 0
    expected: int = 0
    running: int = 0
    failed: int = 0
    current: str | None = None
    builds: dict[int, str] = field(default_factory=dict)
    logs: dict[int, deque[str]] = field(default_factory=dict)
    last_failed: str | None = None
    messages: list[str] = field(default_factory=list)

    def feed(self, line: str) -> bool:
        """Take one stderr line; True if the progress line should be redrawn."""
        if not line.startswith(PREFIX):
            if line.strip():
                self.messages.append(line.rstrip())
            return False
        try:
            ev = json.loads(line[len(PREFIX) :])
        except ValueError:
            return False
        action = ev.get("action")
        if action == "start" and ev.get("type") == ACT_BUILD:
            name = _drv_name(ev.get("text", ""))
            self.builds[ev["id"]] = name
            self.logs[ev["id"]] = deque(maxlen=25)
            self.current = name
            return True
        if action == "result" and ev.get("type") == RES_PROGRESS and len(ev.get("fields", [])) == 4:
            new = tuple(ev["fields"])
            if new == (0, 0, 0, 0) and self.expected:
                return False  # other aggregate activities report zeros
            old_failed = self.failed
            self.done, self.expected, self.running, self.failed = new
            if self.failed > old_failed and self.current is not None:
                self.last_failed = self.current
            return True
        if action == "result" and ev.get("type") == RES_BUILD_LOG_LINE:
            log = self.logs.get(ev.get("id", -1))
            if log is not None and ev.get("fields"):
                log.append(str(ev["fields"][0]))
            return False
        if action == "stop" and ev.get("id") in self.builds:
            finished = self.builds[ev["id"]]
            if self.current == finished:
                self.current = None
            return True
        if action == "msg" and ev.get("level", 9) <= 1:
            self.messages.append(strip_ansi(str(ev.get("msg", ""))).rstrip())
        return False

    def line(self) -> str:
        parts = [f"nix build: {self.done}/{self.expected} derivations"]
        if self.running:
            parts.append(f"{self.running} running")
        if self.current:
            parts.append(f"building {self.current}")
        return ", ".join(parts)

    def failure_tail(self) -> str:
        """The failing derivation's log tail, else Nix's own error messages."""
        if self.last_failed is not None:
            for bid, name in self.builds.items():
                if name == self.last_failed and self.logs.get(bid):
                    return f"log of {name}:\n" + "\n".join(self.logs[bid])
        return "\n".join(self.messages[-25:])
