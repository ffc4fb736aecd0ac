"""qmp: the minimal QMP client against a fake QMP server."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from agent_vm import qmp


@pytest.fixture
def qmp_server(tmp_path: Path) -> Iterator[tuple[Path, list[str]]]:
    """A fake QMP server: greets, answers every command, interleaves an event,
    and fails 'bad-command'."""
    path = tmp_path / "qmp.sock"
    seen: list[str] = []
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(str(path))
    srv.listen()

    def serve() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            with conn, conn.makefile("rwb") as f:
                f.write(b'{"QMP": {"version": {}, "capabilities": []}}\n')
                f.flush()
                for line in f:
                    cmd = json.loads(line)["execute"]
                    seen.append(cmd)
                    if cmd == "bad-command":
                        f.write(b'{"error": {"class": "CommandNotFound", "desc": "no such"}}\n')
                    else:
                        f.write(b'{"event": "POWERDOWN", "timestamp": {}}\n')
                        f.write(b'{"return": {"status": "running"}}\n')
                    f.flush()

    threading.Thread(target=serve, daemon=True).start()
    yield path, seen
    srv.close()


def test_qmp_commands(qmp_server: tuple[Path, list[str]]) -> None:
    path, seen = qmp_server
    with qmp.Qmp(path) as q:
        assert q.execute("query-status") == {"status": "running"}
        with pytest.raises(qmp.QmpError, match="no such"):
            q.execute("bad-command")
    assert seen == ["qmp_capabilities", "query-status", "bad-command"]
    assert qmp.answers(path)
    assert qmp.powerdown(path)
    assert seen[-1] == "system_powerdown"


def test_qmp_without_a_server(tmp_path: Path) -> None:
    assert not qmp.answers(tmp_path / "none.sock")
    assert not qmp.powerdown(tmp_path / "none.sock")
    with pytest.raises(qmp.QmpError, match="cannot connect"):
        qmp.Qmp(tmp_path / "none.sock")


def test_qmp_with_something_else_on_the_socket(tmp_path: Path) -> None:
    path = tmp_path / "qmp.sock"
    with socket.socket(socket.AF_UNIX) as srv:
        srv.bind(str(path))
        srv.listen()

        def greet_wrongly() -> None:
            conn, _ = srv.accept()
            with conn:
                conn.sendall(b'{"hello": 1}\n')
                time.sleep(0.5)

        threading.Thread(target=greet_wrongly, daemon=True).start()
        assert not qmp.answers(path)
