"""A minimal QMP client: enough to ask QEMU to power the guest down."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

from .fsutil import connect_unix


class QmpError(Exception):
    pass


class Qmp:
    def __init__(self, path: Path, timeout: float = 2.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            connect_unix(self.sock, path)
        except OSError as exc:
            self.sock.close()
            raise QmpError(f"cannot connect to {path}: {exc.strerror}") from None
        self._buf = b""
        greeting = self._read()
        if "QMP" not in greeting:
            raise QmpError("no QMP greeting")
        self.execute("qmp_capabilities")

    def _read(self) -> dict[str, Any]:
        while b"\n" not in self._buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise QmpError("QMP connection closed")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        msg: dict[str, Any] = json.loads(line)
        return msg

    def execute(self, command: str, **arguments: Any) -> Any:
        req: dict[str, Any] = {"execute": command}
        if arguments:
            req["arguments"] = arguments
        self.sock.sendall(json.dumps(req).encode() + b"\n")
        while True:
            msg = self._read()
            if "return" in msg:
                return msg["return"]
            if "error" in msg:
                raise QmpError(msg["error"].get("desc", "QMP error"))
            # Asynchronous events (e.g. POWERDOWN) are skipped.

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Qmp:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def powerdown(path: Path) -> bool:
    """Press the ACPI power button; False if QMP did not answer."""
    try:
        with Qmp(path) as q:
            q.execute("system_powerdown")
    except (QmpError, OSError, ValueError):
        return False
    return True


def answers(path: Path) -> bool:
    try:
        with Qmp(path, timeout=1.0) as q:
            q.execute("query-status")
    except (QmpError, OSError, ValueError):
        return False
    return True
