"""Setting a resumed guest's clock, through the QEMU guest agent.

While a VM is suspended its clock stands still (QEMU saves the virtual
clock with the rest), so a resumed guest is behind by the time it spent
saved. QEMU gives no signal the guest could notice and correct by itself
under TCG (kvm-clock and ptp_kvm need KVM), so the host tells it: the
runner gives every VM the guest agent's virtio-serial channel
(lib/qemu-args.nix) and, right after `cont`, this sends `guest-set-time`
with the host's time (what libvirt's `virsh domtime --now` does).

The agent's answers come from the guest, so they are read as bounded data:
one line at most `MAX_LINE` bytes, a deadline on every read, and nothing
in them is used but "was there a `return`".
"""

from __future__ import annotations

import json
import secrets
import socket
import time
from pathlib import Path
from typing import Any

from .fsutil import connect_unix
from .qmp import Qmp

MAX_LINE = 64 * 1024
# The QEMU chardev of the channel (lib/qemu-args.nix).
CHARDEV = "qga"
# guest-sync-delimited: the guest agent's answer is preceded by this byte,
# so whatever an earlier client left unread in the channel is skipped.
DELIMITER = b"\xff"


class ClockNotSet(Exception):
    """The guest agent did not confirm the new time."""


class _Channel:
    def __init__(self, path: Path, deadline: float) -> None:
        self.deadline = deadline
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.buf = b""
        try:
            self.sock.settimeout(self._left())
            connect_unix(self.sock, path)
        except OSError as exc:
            self.sock.close()
            raise ClockNotSet(f"no guest agent channel: {exc.strerror or exc}") from None

    def _left(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise ClockNotSet("the guest agent did not answer in time")
        return left

    def send(self, command: str, **arguments: Any) -> None:
        req: dict[str, Any] = {"execute": command}
        if arguments:
            req["arguments"] = arguments
        self.sock.settimeout(self._left())
        self.sock.sendall(json.dumps(req).encode() + b"\n")

    def line(self) -> dict[str, Any]:
        while b"\n" not in self.buf:
            self._more()
        raw, self.buf = self.buf.split(b"\n", 1)
        try:
            msg = json.loads(raw)
        except ValueError:
            raise ClockNotSet("the guest agent sent something that is not JSON") from None
        if not isinstance(msg, dict):
            raise ClockNotSet("the guest agent sent something that is not an answer")
        return msg

    def _more(self) -> None:
        if len(self.buf) > MAX_LINE:
            raise ClockNotSet("the guest agent sent an overlong line")
        self.sock.settimeout(self._left())
        try:
            chunk = self.sock.recv(4096)
        except TimeoutError:
            raise ClockNotSet("the guest agent did not answer in time") from None
        except OSError as exc:
            raise ClockNotSet(f"the guest agent did not answer: {exc}") from None
        if not chunk:
            raise ClockNotSet("the guest agent channel closed")
        self.buf += chunk

    def sync(self) -> None:
        """Skip whatever is in the channel up to our own sync's answer."""
        token = 1 + secrets.randbelow(2**31 - 1)
        self.send("guest-sync-delimited", id=token)
        while DELIMITER not in self.buf:
            self.buf = b""
            self._more()
        self.buf = self.buf.split(DELIMITER, 1)[1]
        while self.line().get("return") != token:
            pass

    def close(self) -> None:
        self.sock.close()


def agent_listening(q: Qmp) -> bool:
    """Has the guest opened its end of the agent's channel? A guest without
    the agent (agent-vm.resume.setClock = false) would never answer."""
    for chardev in q.execute("query-chardev"):
        if isinstance(chardev, dict) and chardev.get("label") == CHARDEV:
            return bool(chardev.get("frontend-open"))
    return False


def set_to_host_time(path: Path, timeout: float = 10.0) -> None:
    """Step the guest's clock to the host's; ClockNotSet if it did not confirm."""
    ch = _Channel(path, time.monotonic() + timeout)
    try:
        ch.sync()
        ch.send("guest-set-time", time=time.time_ns())
        while True:
            msg = ch.line()
            if "return" in msg:
                return
            if "error" in msg:
                raise ClockNotSet("the guest agent refused to set the time")
    finally:
        ch.close()
