"""Who owns the workspace, on the host and in the guest.

An ordinary host user: the guest user gets the same uid/gid and QEMU's 9p
runs with security_model=none, so ownership is the same on both sides.

Host user root: the guest user cannot be uid 0, so it is uid/gid 1000 and
9p runs with security_model=mapped-xattr: files stay root's on the host and
the guest sees the owner stored in `user.virtfs.*` xattrs. Files that lack
those xattrs (everything the host made) would show as root in the guest,
so we tag them for the guest user before each start.
"""

from __future__ import annotations

import errno
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from .errors import InvalidInput

ROOT_GUEST_ID = 1000
_UID = "user.virtfs.uid"
_GID = "user.virtfs.gid"


@dataclass(frozen=True)
class Mapping:
    uid: int
    gid: int
    security_model: str

    @property
    def needs_tagging(self) -> bool:
        return self.security_model == "mapped-xattr"


def for_host_user(uid: int | None = None, gid: int | None = None) -> Mapping:
    uid = os.getuid() if uid is None else uid
    gid = os.getgid() if gid is None else gid
    if uid == 0:
        return Mapping(ROOT_GUEST_ID, ROOT_GUEST_ID, "mapped-xattr")
    return Mapping(uid, gid if gid != 0 else uid, "none")


def tag_tree(root: Path, mapping: Mapping) -> int:
    """Give files without 9p owner xattrs the guest user; return how many."""
    if not mapping.needs_tagging:
        return 0
    uid = struct.pack("<I", mapping.uid)  # QEMU stores them as little-endian u32
    gid = struct.pack("<I", mapping.gid)
    count = 0
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames, None]:
            path = dirpath if name is None else os.path.join(dirpath, name)
            if os.path.islink(path):
                continue  # user xattrs cannot be set on symlinks
            try:
                os.getxattr(path, _UID)
                continue
            except OSError:
                pass
            try:
                os.setxattr(path, _UID, uid)
                os.setxattr(path, _GID, gid)
            except OSError as exc:
                if exc.errno not in (errno.EOPNOTSUPP, errno.ENOTSUP):
                    raise
                # QEMU's mapped-xattr model could not work here either.
                raise InvalidInput(
                    f"the workspace {root} is on a filesystem without user xattrs, "
                    "which a VM started as root needs",
                    hint="use --state-dir or --workspace on another filesystem, "
                    "or run agent-vm as an ordinary user",
                ) from None
            count += 1
    return count
