"""Running out of space: say which file system is full, not `Errno 28`.

A full file system shows up in three ways: an OSError with ENOSPC/EDQUOT
from our own writes, a tool that fails part way (git's "unpack-objects
failed", ssh-keygen, qemu-img in the runner) with the real cause in a line
we do not show, and QEMU exiting. The last two are recognised by the file
system being full right after the failure, before anything is cleaned up
(git leaves its partial objects behind, so it still is).
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from pathlib import Path

from .errors import (
    BuildFailed,
    CommandFailed,
    GitError,
    GuestFailed,
    NoSpace,
)

# Less than this much room left counts as full: a failed write leaves a few
# blocks at most.
FULL_BELOW_BYTES = 1024 * 1024
_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
# Failures that a full file system explains.
_TOOL_FAILURES = (CommandFailed, GitError, GuestFailed, BuildFailed)


def _existing(path: Path) -> Path:
    return next((p for p in (path, *path.parents) if p.exists()), Path("/"))


def mount_point(path: Path) -> Path:
    """The mount point of the file system holding `path`."""
    p = _existing(path.absolute())
    dev = p.stat().st_dev
    while p.parent != p and p.parent.stat().st_dev == dev:
        p = p.parent
    return p


def is_full(path: Path) -> bool:
    """No room (or no inodes) left for the user on `path`'s file system."""
    try:
        st = os.statvfs(_existing(path))
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < FULL_BELOW_BYTES or (st.f_files > 0 and st.f_favail == 0)


def no_space(path: Path) -> NoSpace:
    mnt = mount_point(path)
    where = f"{mnt}" if mnt == path else f"{mnt} (the file system of {path})"
    return NoSpace(
        f"no space left on {where}",
        hint="free some space there, or use a --state-dir on another file system, and try again",
    )


def explains(exc: BaseException, path: Path) -> NoSpace | None:
    """NoSpace if a full file system at `path` explains `exc`, else None.
    Call it before cleaning up after the failure."""
    if isinstance(exc, OSError):
        return no_space(path) if exc.errno in _SPACE_ERRNOS else None
    if isinstance(exc, _TOOL_FAILURES) and is_full(path):
        err = no_space(path)
        err.detail = "\n".join(x for x in (exc.detail, exc.message) if x)
        return err
    return None


@contextlib.contextmanager
def guard(path: Path) -> Iterator[None]:
    """Turn a failure that a full file system at `path` caused into NoSpace."""
    try:
        yield
    except Exception as exc:
        err = explains(exc, path)
        if err is None:
            raise
        raise err from exc
