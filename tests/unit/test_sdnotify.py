"""sdnotify: READY/STOPPING/STATUS to systemd over $NOTIFY_SOCKET, through
real datagram sockets (a path and Linux's abstract namespace)."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from agent_vm import sdnotify


@pytest.fixture
def listener(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind(str(path))
        s.settimeout(2)
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        yield s


def test_fields_are_sent_as_key_value_lines(listener: socket.socket) -> None:
    assert sdnotify.notify(ready="1", status="VM main running") is True
    assert listener.recv(4096) == b"READY=1\nSTATUS=VM main running"


def test_the_abstract_namespace(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"agent-vm-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind("\0" + name)
        s.settimeout(2)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert sdnotify.notify(stopping="1")
        assert s.recv(4096) == b"STOPPING=1"


def test_outside_systemd_nothing_is_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sdnotify.notify(ready="1") is False


def test_a_socket_that_is_gone_is_not_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody"))
    assert sdnotify.notify(ready="1") is False
