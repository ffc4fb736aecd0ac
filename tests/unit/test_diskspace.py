"""diskspace: a full file system is a NoSpace naming it, not `Errno 28`."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
from agent_vm import diskspace
from agent_vm.errors import CommandFailed, GitError, InvalidInput, NoSpace


def statvfs(free: int, inodes_free: int = 1000) -> object:
    return SimpleNamespace(f_bavail=free // 4096, f_frsize=4096, f_files=5000, f_favail=inodes_free)


def test_enospc_from_a_write_is_no_space_naming_the_file_system(tmp_path: Path) -> None:
    with pytest.raises(NoSpace) as exc, diskspace.guard(tmp_path):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    mnt = diskspace.mount_point(tmp_path)
    assert exc.value.message == f"no space left on {mnt} (the file system of {tmp_path})"
    assert exc.value.exit_code == 22 and exc.value.hint
    with pytest.raises(NoSpace), diskspace.guard(tmp_path):
        raise OSError(errno.EDQUOT, os.strerror(errno.EDQUOT))


def test_other_errors_pass_through(tmp_path: Path) -> None:
    with pytest.raises(PermissionError), diskspace.guard(tmp_path):
        raise PermissionError(errno.EACCES, "denied")
    with pytest.raises(InvalidInput), diskspace.guard(tmp_path):
        raise InvalidInput("bad")


def test_a_tool_failing_on_a_full_file_system_is_no_space(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # git says only "unpack-objects failed" when the clone does not fit.
    monkeypatch.setattr(diskspace.os, "statvfs", lambda p: statvfs(free=8192))
    with pytest.raises(NoSpace) as exc, diskspace.guard(tmp_path):
        raise GitError("could not make the workspace: fatal: unpack-objects failed")
    assert exc.value.detail == "could not make the workspace: fatal: unpack-objects failed"
    monkeypatch.setattr(diskspace.os, "statvfs", lambda p: statvfs(free=10**9, inodes_free=0))
    with pytest.raises(NoSpace), diskspace.guard(tmp_path):
        raise CommandFailed("'ssh-keygen -q' failed with exit code 1")


def test_a_tool_failing_with_room_left_is_its_own_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(diskspace.os, "statvfs", lambda p: statvfs(free=10**9))
    with pytest.raises(GitError), diskspace.guard(tmp_path):
        raise GitError("could not make the workspace")


def test_mount_point_of_a_path_not_made_yet(tmp_path: Path) -> None:
    assert diskspace.mount_point(tmp_path / "a" / "b") == diskspace.mount_point(tmp_path)
    assert diskspace.mount_point(Path("/proc/self")) == Path("/proc")
