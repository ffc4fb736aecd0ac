"""Which existing directory may be shared into a guest (`create --workspace`).

The guest owns what it is given: it reads and writes the whole tree as its
user, and for a root host user `start` tags every file in it with ownership
xattrs. So the tree must be a project, never the system or the user's whole
home: `/`, a top-level system directory, anything under the trees the
system alone owns (`/nix`, `/etc`, `/usr`, …), the home directory itself,
and any tree that holds agent-vm's own state (the VMs' keys, and the
per-branch workspaces of other VMs) or lies inside it.
"""

from __future__ import annotations

import contextlib
import os
import pwd
from pathlib import Path

from .errors import InvalidInput

# Trees that belong to the system as a whole: neither they nor anything in
# them is a project to hand to a guest.
SYSTEM_TREES = tuple(
    Path(p)
    for p in (
        "/nix",
        "/etc",
        "/usr",
        "/bin",
        "/sbin",
        "/lib",
        "/lib32",
        "/lib64",
        "/libx32",
        "/boot",
        "/dev",
        "/proc",
        "/sys",
        "/run",
    )
)
# Directories that hold many users' or programs' trees: a project may live
# inside one, but the directory itself is not a project.
_PARENTS = ("/", "/home", "/root", "/var", "/var/lib", "/opt", "/srv", "/mnt", "/media")
SHARED_PARENTS = tuple(Path(p) for p in (*_PARENTS, "/tmp", "/var/tmp"))  # noqa: S108 - refused


def _homes() -> set[Path]:
    """$HOME and the passwd entry's home (they differ under sudo)."""
    homes = set()
    with contextlib.suppress(RuntimeError):  # no $HOME and no passwd entry
        homes.add(Path.home().resolve())
    with contextlib.suppress(KeyError):  # a uid without a passwd entry (containers)
        homes.add(Path(pwd.getpwuid(os.geteuid()).pw_dir).resolve())
    return homes


def check_workspace_dir(path: Path, state_dir: Path) -> Path:
    """`path` resolved, if it may be shared as a VM's workspace; else
    InvalidInput saying why."""
    flag = f"--workspace {path}"
    real = path.resolve()
    hint = "share a project's own directory, e.g. --workspace ~/src/project"
    if real in SHARED_PARENTS or any(real == t or real.is_relative_to(t) for t in SYSTEM_TREES):
        raise InvalidInput(f"{flag}: {real} is a system directory, not a project", hint=hint)
    if real in _homes():
        raise InvalidInput(f"{flag}: {real} is your whole home directory", hint=hint)
    state = state_dir.resolve()
    if state == real or state.is_relative_to(real):
        raise InvalidInput(
            f"{flag}: {real} contains agent-vm's state directory {state} (the VMs' keys)",
            hint=hint,
        )
    if real.is_relative_to(state):
        raise InvalidInput(f"{flag}: {real} is inside agent-vm's state directory", hint=hint)
    if not real.is_dir():
        raise InvalidInput(f"{flag} is not a directory")
    return real
