"""`--workspace-mode disk`: the branch's workspace on a disk of the VM's own.

Made once, at create: the branch's one-commit clone goes into a private
temporary directory, `mkfs.ext4 -d` copies it into a new file system
(which needs no root and no mount), and `qemu-img` turns that into the
qcow2 the runner attaches (serial `agent-vm-workspace`, mounted at
/workspace in the guest). The host writes it this once and never reads it
back: no host process mounts, opens or parses it afterwards, so nothing the
guest writes there reaches the host except through a git bundle the host
verifies (diff/pull). The clone and the raw image are deleted as soon as
the qcow2 exists.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

from . import gitops, ownership, tools
from .gitops import Checkout

LABEL = "agent-vm-ws"
# Debian puts mkfs.ext4 in /sbin, which an ordinary user's PATH lacks.
SBIN = ("/usr/sbin", "/sbin")


def _e2fsprogs(tool: str) -> str:
    if tools.have(tool):
        return tool
    for d in SBIN:
        candidate = Path(d) / tool
        if os.access(candidate, os.X_OK):
            return str(candidate)
    return tool  # tools.run reports it missing, with the package


def mkfs_ext4() -> str:
    return _e2fsprogs("mkfs.ext4")


def debugfs() -> str:
    return _e2fsprogs("debugfs")


def _chown_tree(root: Path, uid: int, gid: int) -> None:
    for dirpath, dirnames, filenames in os.walk(root):
        os.lchown(dirpath, uid, gid)
        for name in (*dirnames, *filenames):
            os.lchown(os.path.join(dirpath, name), uid, gid)


def make(checkout: Checkout, dest: Path, size_mib: int) -> None:
    """Write `dest` (qcow2): an ext4 file system holding the branch's clone,
    owned by the guest user."""
    mapping = ownership.for_host_user()
    work = Path(tempfile.mkdtemp(prefix=".workspace-", dir=dest.parent))
    try:
        tree = work / "tree"
        gitops.make_workspace(checkout, tree)
        if os.getuid() == 0:
            # As root the guest user is not us (ownership.py); as anyone
            # else it has our ids, which the files have already.
            _chown_tree(tree, mapping.uid, mapping.gid)
        raw = work / "workspace.raw"
        with open(raw, "wb") as f:
            f.truncate(size_mib * 1024 * 1024)
        tools.run(
            [
                mkfs_ext4(),
                "-q",
                "-F",
                "-L",
                LABEL,
                "-E",
                f"root_owner={mapping.uid}:{mapping.gid}",
                "-d",
                str(tree),
                str(raw),
            ]
        )
        # mkfs makes lost+found, root's and unreadable to the guest user: git
        # in /workspace would warn about it and count it as untracked.
        tools.run([debugfs(), "-w", "-R", "rmdir lost+found", str(raw)])
        partial = dest.with_name(dest.name + ".partial")
        tools.run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", str(raw), str(partial)])
        os.chmod(partial, 0o600)
        os.rename(partial, dest)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            dest.with_name(dest.name + ".partial").unlink()
