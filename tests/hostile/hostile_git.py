"""A hostile workspace for the tests of every layer: plant.sh writes the
plants, prove.sh and `prove` show that they are live (ordinary git run in a
copy executes them), `markers` lists what ran."""

from __future__ import annotations

import os
import pty
import shutil
import subprocess
from pathlib import Path

HERE = Path(__file__).resolve().parent
PLANT = HERE / "plant.sh"
PROVE = HERE / "prove.sh"

# What prove() makes ordinary git run from the plants.
PROVEN = {
    "fsmonitor",
    "clean",
    "smudge",
    "process",
    "hook-pre-commit",
    "hook-commit-msg",
    "external",
    "textconv",
    "alias",
    "include",
    "pager",
}


def as_user(argv: list[str], user: str | None) -> list[str]:
    return ["runuser", "-u", user, "--", *argv] if user else argv


def markers(d: Path) -> set[str]:
    return {p.name for p in d.iterdir()}


def make_marker_dir(parent: Path) -> Path:
    """A directory every test user can create markers in."""
    d = parent / "markers"
    d.mkdir()
    os.chmod(d, 0o1777)  # noqa: S103 - the unprivileged user's planted commands write here
    return d


def plant(ws: Path, marker_dir: Path) -> None:
    subprocess.run(["sh", str(PLANT), str(ws), str(marker_dir)], check=True)


def prove(ws: Path, scratch: Path, marker_dir: Path, user: str | None = None) -> set[str]:
    """Run ordinary git in a copy of `ws` as `user`; return the markers that
    appeared (then remove them)."""
    copy = scratch / "copy-of-workspace"
    subprocess.run(as_user(["cp", "-a", str(ws), str(copy)], user), check=True)
    subprocess.run(as_user(["sh", str(PROVE), str(copy)], user), check=True, timeout=120)
    _pager(copy, user)
    seen = markers(marker_dir)
    for p in marker_dir.iterdir():
        p.unlink()
    shutil.rmtree(copy, ignore_errors=True)
    return seen


def _pager(copy: Path, user: str | None) -> None:
    """git pages only to a terminal: give it one."""
    main, sub = pty.openpty()
    try:
        subprocess.run(
            as_user(["git", "-C", str(copy), "log", "-1", "--format=%s"], user),
            stdin=sub,
            stdout=sub,
            stderr=sub,
            timeout=60,
            check=False,
        )
    finally:
        os.close(sub)
        os.close(main)
