"""ownership: the guest user's ids and the 9p security model for root and
for an ordinary user; the xattr tags that give root's files to the guest."""

from __future__ import annotations

import errno
import os
import struct
from pathlib import Path

import pytest
from agent_vm import ownership
from agent_vm.errors import AgentVmError


def test_ordinary_user_keeps_their_ids() -> None:
    m = ownership.for_host_user(1234, 5678)
    assert (m.uid, m.gid, m.security_model, m.needs_tagging) == (1234, 5678, "none", False)
    # A user whose primary group is root's gets their uid as gid in the guest.
    assert ownership.for_host_user(1234, 0).gid == 1234


def test_root_maps_to_1000_with_mapped_xattr() -> None:
    m = ownership.for_host_user(0, 0)
    assert (m.uid, m.gid, m.security_model, m.needs_tagging) == (1000, 1000, "mapped-xattr", True)


def test_default_is_the_current_user() -> None:
    m = ownership.for_host_user()
    assert m.uid == (1000 if os.getuid() == 0 else os.getuid())


def test_tag_tree_tags_untagged_files_once(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f").write_text("x")
    (tmp_path / "g").write_text("y")
    (tmp_path / "link").symlink_to("g")  # user xattrs cannot be set on symlinks
    m = ownership.Mapping(1000, 1001, "mapped-xattr")
    assert ownership.tag_tree(tmp_path, m) == 4  # root, d, d/f, g
    assert os.getxattr(tmp_path / "d" / "f", "user.virtfs.uid") == struct.pack("<I", 1000)
    assert os.getxattr(tmp_path / "g", "user.virtfs.gid") == struct.pack("<I", 1001)
    # Files the guest already owns (tagged) are left alone.
    assert ownership.tag_tree(tmp_path, m) == 0
    (tmp_path / "new").write_text("z")
    assert ownership.tag_tree(tmp_path, m) == 1


def test_tag_tree_does_nothing_without_mapped_xattr(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    assert ownership.tag_tree(tmp_path, ownership.Mapping(1000, 1000, "none")) == 0
    with pytest.raises(OSError):
        os.getxattr(tmp_path / "f", "user.virtfs.uid")


def test_filesystem_without_user_xattrs_is_a_typed_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "f").write_text("x")

    def unsupported(*args: object) -> None:
        raise OSError(errno.EOPNOTSUPP, "Operation not supported")

    monkeypatch.setattr(ownership.os, "setxattr", unsupported)
    with pytest.raises(AgentVmError):
        ownership.tag_tree(tmp_path, ownership.Mapping(1000, 1000, "mapped-xattr"))
