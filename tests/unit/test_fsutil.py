"""fsutil: atomic private writes, private dirs, flock-based Busy, log tails,
and unix sockets at paths longer than sun_path."""

from __future__ import annotations

import os
import socket
import stat
import threading
from pathlib import Path

import pytest
from agent_vm import fsutil
from agent_vm.errors import Busy, InvalidInput


def mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_atomic_write_is_private_and_replaces(tmp_path: Path) -> None:
    f = tmp_path / "vm.json"
    f.write_text("old")
    f.chmod(0o644)
    fsutil.atomic_write(f, "new")
    assert f.read_text() == "new" and mode(f) == 0o600
    fsutil.atomic_write(f, b"\x00bytes", mode=0o640)
    assert f.read_bytes() == b"\x00bytes" and mode(f) == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["vm.json"]


def test_atomic_write_failure_leaves_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    f = tmp_path / "vm.json"
    f.write_text("old")

    def fail(*args: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(fsutil.os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        fsutil.atomic_write(f, "new")
    assert f.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["vm.json"]  # temp file removed


def test_ensure_private_dir_makes_a_new_one_0700(tmp_path: Path) -> None:
    d = tmp_path / "a" / "b"
    old = os.umask(0o077 | 0o100)  # even a umask that takes bits off 0700
    try:
        fsutil.ensure_private_dir(d)
    finally:
        os.umask(old)
    # The parent agent-vm made too (`egress/` above `egress/secrets` once
    # came out 0755 from the umask).
    assert mode(d) == mode(d.parent) == 0o700


def test_ensure_private_dir_never_changes_an_existing_one(tmp_path: Path) -> None:
    d = tmp_path / "mine"
    d.mkdir()
    d.chmod(0o755)
    fsutil.ensure_private_dir(d)
    assert mode(d) == 0o755


@pytest.mark.parametrize("bits", [0o1777, 0o777, 0o770, 0o757])
def test_a_dir_others_can_write_is_refused_and_left_alone(tmp_path: Path, bits: int) -> None:
    # `--state-dir /tmp` once became 0700 and lost its sticky bit.
    d = tmp_path / "shared"
    d.mkdir()
    d.chmod(bits)
    with pytest.raises(InvalidInput) as exc:
        fsutil.ensure_private_dir(d)
    assert exc.value.message == (
        f"{d} can be written by other users (mode {bits:04o}); agent-vm keeps keys there"
    )
    assert exc.value.hint and "--state-dir" in exc.value.hint
    # Never advise taking a shared (sticky) directory from its other users.
    assert ("chmod" in exc.value.hint) == (not bits & 0o1000)
    assert mode(d) == bits


def test_a_dir_of_another_user_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = tmp_path / "theirs"
    d.mkdir(mode=0o700)
    monkeypatch.setattr(fsutil.os, "geteuid", lambda: os.stat(d).st_uid + 1)
    with pytest.raises(InvalidInput, match=r"belongs to another user \(uid \d+\)"):
        fsutil.ensure_private_dir(d)
    assert mode(d) == 0o700


def test_a_file_is_not_a_private_dir(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_text("")
    with pytest.raises(InvalidInput, match="is not a directory"):
        fsutil.check_private_dir(f)


def test_file_lock_is_busy_while_held(tmp_path: Path) -> None:
    lock = tmp_path / "locks" / "vm.lock"
    with fsutil.file_lock(lock, "VM x"):
        with pytest.raises(Busy) as exc, fsutil.file_lock(lock, "VM x"):
            pass
        assert exc.value.exit_code == 14
        assert exc.value.message == "VM x is busy: another agent-vm command is working on it"
    with fsutil.file_lock(lock, "VM x"):
        pass  # released


def test_file_lock_waits(tmp_path: Path) -> None:
    lock = tmp_path / "ports.lock"
    held = threading.Event()
    release = threading.Event()

    def holder() -> None:
        with fsutil.file_lock(lock, "ports"):
            held.set()
            release.wait(5)

    t = threading.Thread(target=holder)
    t.start()
    held.wait(5)
    threading.Timer(0.2, release.set).start()
    with fsutil.file_lock(lock, "ports", wait=5):
        pass
    t.join()


def test_tail(tmp_path: Path) -> None:
    f = tmp_path / "serial.log"
    assert fsutil.tail(f) == ""
    f.write_bytes(b"".join(f"line {i}\r\n".encode() for i in range(100)) + b"\xff bad utf8\n")
    out = fsutil.tail(f, 3)
    assert out == "line 98\nline 99\n\ufffd bad utf8"


def test_tail_of_a_huge_file_reads_only_the_end(tmp_path: Path) -> None:
    f = tmp_path / "big.log"
    f.write_bytes(b"x" * (1 << 20) + b"\nlast\n")
    assert fsutil.tail(f, 1) == "last"


def test_connect_unix_with_a_path_longer_than_sun_path(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    path = deep / "qmp.sock"
    assert len(os.fsencode(path)) > fsutil.MAX_SOCKET_PATH
    srv = socket.socket(socket.AF_UNIX)
    cwd = os.getcwd()
    os.chdir(deep)
    try:
        srv.bind("qmp.sock")  # as QEMU does: relative to the VM dir
    finally:
        os.chdir(cwd)
    srv.listen()
    with srv, socket.socket(socket.AF_UNIX) as c:
        fsutil.connect_unix(c, path)
        conn, _ = srv.accept()
        with conn:
            c.sendall(b"hi")
            assert conn.recv(2) == b"hi"


def test_connect_unix_short_path_and_missing_socket(tmp_path: Path) -> None:
    with socket.socket(socket.AF_UNIX) as c, pytest.raises(OSError):
        fsutil.connect_unix(c, tmp_path / "none.sock")
