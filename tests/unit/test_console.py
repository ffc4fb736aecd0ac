"""console: attaching needs the VM's console socket; following a log prints
what is there and then what is appended."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
from agent_vm import console
from agent_vm.errors import NotRunning


def test_attach_without_a_console_socket_is_not_running(tmp_path: Path) -> None:
    with pytest.raises(NotRunning) as exc:
        console.attach(tmp_path / "console.sock", "main-0123abcd")
    assert exc.value.exit_code == 6
    assert exc.value.message == "cannot attach to the console of VM main-0123abcd (is it running?)"


def test_follow_prints_then_follows(tmp_path: Path) -> None:
    log = tmp_path / "serial.log"
    log.write_bytes(b"boot\n")
    r, w = os.pipe()

    def append() -> None:
        time.sleep(0.15)
        with open(log, "ab") as f:
            f.write(b"login:\n")

    t = threading.Thread(target=append)
    t.start()
    console.follow(log, stop=time.monotonic() + 0.5, out=w)
    t.join()
    os.close(w)
    with os.fdopen(r, "rb") as f:
        assert f.read() == b"boot\nlogin:\n"


def test_follow_waits_for_the_file(tmp_path: Path) -> None:
    log = tmp_path / "serial.log"
    r, w = os.pipe()
    threading.Timer(0.15, lambda: log.write_bytes(b"late\n")).start()
    console.follow(log, stop=time.monotonic() + 0.6, out=w)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        assert f.read() == b"late\n"
