"""Atomic file writes, private directories and cross-process locks."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from .errors import Busy, InvalidInput

# sun_path in struct sockaddr_un is 108 bytes including the NUL.
MAX_SOCKET_PATH = 107


def ensure_private_dir(path: Path) -> None:
    """Create `path` 0700 (and each missing parent 0700), or use the existing
    one as it is.

    A directory agent-vm did not create is never chmod-ed (`--state-dir
    /tmp` once lost its sticky bit that way): one that another user owns or
    others can write is refused instead (`check_private_dir`).
    """
    missing = [p for p in (path, *path.parents) if not p.exists()]
    for d in reversed(missing):
        try:
            d.mkdir(mode=0o700)
        except FileExistsError:
            continue  # made by a concurrent command: not ours to chmod
        # Ours, just made: the umask may have taken bits off 0700 (even x,
        # without which the next one down could not be made).
        os.chmod(d, 0o700)
    check_private_dir(path)


def check_private_dir(path: Path) -> None:
    """Refuse a directory another user owns or others can write: they could
    plant a VM whose runner we would execute, or read the VMs' keys.
    FileNotFoundError when it does not exist."""
    try:
        st = path.stat()
    except (PermissionError, NotADirectoryError) as exc:
        raise InvalidInput(f"{path} cannot be reached: {exc.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise InvalidInput(f"{path} is not a directory")
    if st.st_uid != os.geteuid():
        raise InvalidInput(
            f"{path} belongs to another user (uid {st.st_uid}); agent-vm keeps keys there",
            hint="use a directory of your own with --state-dir (agent-vm creates it 0700)",
        )
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o022:
        raise InvalidInput(
            f"{path} can be written by other users (mode {mode:04o}); agent-vm keeps keys there",
            # A sticky directory (/tmp) is shared by design: never suggest
            # taking that from its other users.
            hint="use a directory of your own with --state-dir"
            + ("" if mode & stat.S_ISVTX else f", or 'chmod go-w {path}' if it is yours alone"),
        )


def atomic_write(path: Path, data: str | bytes, mode: int = 0o600) -> None:
    """Write via a temp file in the same directory, fsync, then rename.

    A reader sees the old file or the new one, never a torn one, even if we
    are killed half way.
    """
    raw = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


@contextlib.contextmanager
def file_lock(path: Path, what: str, wait: float = 0.0) -> Iterator[None]:
    """Hold an exclusive flock on `path`; raise Busy if `wait` seconds pass.

    flock locks die with the process, so a killed agent-vm never leaves a
    lock behind.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise
                if time.monotonic() >= deadline:
                    raise Busy(
                        f"{what} is busy: another agent-vm command is working on it",
                        hint="wait for it to finish and try again",
                    ) from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)


def remove(*paths: Path) -> None:
    """Unlink each of `paths` that exists."""
    for p in paths:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


def rotate(path: Path) -> None:
    """Keep `path` as `path.1` (replacing an older one) and start afresh: a
    log shows one boot, and its tail in an error message is this boot's."""
    with contextlib.suppress(FileNotFoundError):
        os.replace(path, previous(path))


def previous(path: Path) -> Path:
    return path.with_name(path.name + ".1")


def tail(path: Path, lines: int = 30) -> str:
    """The last `lines` lines of a text file ('' if it does not exist)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            data = f.read()
    except FileNotFoundError:
        return ""
    text = data.decode("utf-8", "replace").replace("\r", "")
    return "\n".join(text.splitlines()[-lines:])


def connect_unix(sock: socket.socket, path: Path) -> None:
    """Connect to a unix socket at `path`, however long the path is.

    A long path is reached through /proc/self/fd/N/<name>, with N an
    O_PATH descriptor of the directory, which always fits.
    """
    if len(os.fsencode(path)) <= MAX_SOCKET_PATH:
        sock.connect(str(path))
        return
    dirfd = os.open(path.parent, os.O_PATH | os.O_DIRECTORY)
    try:
        sock.connect(f"/proc/self/fd/{dirfd}/{path.name}")
    finally:
        os.close(dirfd)
