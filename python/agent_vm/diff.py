"""`agent-vm diff`: everything the agent changed since the workspace was made.

The base is the commit recorded in vm.json when the workspace was made.
Commits are the workspace HEAD's history beyond it; "uncommitted" is the
work tree (untracked files included, ignored ones not) against HEAD; the
patch or stat goes from the base to the work tree, so it shows both. It is
all computed in the quarantine from data, whether the VM runs or not.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from pydantic import BaseModel

from . import quarantine, sanitize
from .errors import GitError
from .models import VmConfig
from .paths import StateLayout, VmPaths
from .quarantine import SAFE_DIFF, Quarantine

DIFF_SCHEMA_VERSION = 1


class DiffCommit(BaseModel):
    commit: str
    subject: str


class DiffFile(BaseModel):
    path: str
    status: str  # git's letter: A (new, untracked or staged), M, D, T
    insertions: int | None = None  # None: a binary file
    deletions: int | None = None


class DiffReport(BaseModel):
    """`agent-vm diff --json`."""

    schema_version: int = DIFF_SCHEMA_VERSION
    vm: str
    branch: str
    base: str
    head: str | None
    head_ref: str | None
    commits: list[DiffCommit]
    uncommitted: list[DiffFile]  # the work tree against HEAD
    files: list[DiffFile]  # the work tree against the base: everything
    problems: list[str] = []
    patch: str | None = None


def report(
    layout: StateLayout, vm: VmPaths, cfg: VmConfig, stat: bool = False
) -> tuple[DiffReport, bytes]:
    """The report and the patch (or stat) as git wrote it, bytes unchanged."""
    with quarantine.opened(vm, layout.quarantine_lock(vm.name), cfg) as (q, snap):
        base = cfg.commit
        if not q.object_types([base]):
            raise GitError(
                f"VM {vm.name}'s workspace no longer has its base commit {base[:12]}",
                hint="the agent rewrote its history; compare by hand from a pulled branch",
            )
        head = snap.require_head()
        head_tree = q.tree_of(head)
        tree = q.files_tree(snap, head)
        rep = DiffReport(
            vm=vm.name,
            branch=cfg.branch,
            base=base,
            head=head,
            head_ref=snap.head_ref,
            commits=_commits(q, head, base),
            uncommitted=_files(q, head_tree, tree),
            files=_files(q, base, tree),
            problems=snap.problems,
        )
        if stat:
            return rep, q.git("diff", *SAFE_DIFF, "--stat", base, tree).stdout.encode()
        return rep, _patch(q, base, tree)


def _commits(q: Quarantine, head: str | None, base: str) -> list[DiffCommit]:
    if head is None:
        return []
    res = q.git("log", "--no-decorate", "--no-color", "-z", "--format=%H %s", head, f"^{base}")
    out = []
    for record in res.stdout.split("\0"):
        if record.strip():
            oid, _, subject = record.strip("\n").partition(" ")
            out.append(DiffCommit(commit=oid, subject=subject))
    return out


def _files(q: Quarantine, a: str, b: str) -> list[DiffFile]:
    if not q.changed_files(a, b):
        return []
    names = q.git("diff", *SAFE_DIFF, "--no-renames", "--name-status", "-z", a, b).stdout
    fields = names.split("\0")
    status = {fields[i + 1]: fields[i] for i in range(0, len(fields) - 1, 2)}
    counts = q.git("diff", *SAFE_DIFF, "--no-renames", "--numstat", "-z", a, b).stdout
    out = []
    for record in counts.split("\0"):
        if not record:
            continue
        added, deleted, path = record.split("\t", 2)
        out.append(
            DiffFile(
                path=path,
                status=status.get(path, "M"),
                insertions=int(added) if added.isdigit() else None,
                deletions=int(deleted) if deleted.isdigit() else None,
            )
        )
    return out


def _patch(q: Quarantine, base: str, tree: str) -> bytes:
    """git writes the patch to a file of ours: its bytes stay exact."""
    fd, name = tempfile.mkstemp(dir=q.root, prefix="patch.")
    os.close(fd)
    try:
        q.git("diff", *SAFE_DIFF, "--no-renames", f"--output={name}", base, tree)
        return Path(name).read_bytes()
    finally:
        os.unlink(name)


def render(rep: DiffReport) -> str:
    """The summary above the patch, every guest-written string escaped."""
    s = sanitize.text
    where = f"branch {s(rep.head_ref.removeprefix('refs/heads/'))}" if rep.head_ref else "detached"
    lines = [
        f"VM {rep.vm} (branch {s(rep.branch)}): the agent's work since {rep.base[:12]}",
        f"HEAD: {rep.head[:12] if rep.head else 'no commits'} ({where})",
        f"commits ({len(rep.commits)}):",
        *(f"  {c.commit[:12]} {s(c.subject)}" for c in rep.commits),
        f"uncommitted ({len(rep.uncommitted)}; A = new file, untracked or staged):",
        *(f"  {f.status} {s(f.path)}" for f in rep.uncommitted),
    ]
    lines += [f"warning: {s(p)}" for p in rep.problems]
    return "\n".join(lines) + "\n"
