"""What destroying a workspace would lose: the check that guards destroy.

Work "exists elsewhere" when the source repository (the user's own, trusted)
reaches it from one of its refs, which is where `agent-vm pull` puts it, or,
for the uncommitted files, when a pull committed exactly this state. The
base commit the workspace was made from and everything below it are the
user's own. Everything else the workspace's refs, HEAD, linked worktrees,
stash or reflogs reach is work that would be lost; a workspace that cannot
be read as data is a refusal too ("cannot verify" is not "nothing to lose").
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path

from . import gitops, pull, quarantine
from .errors import CommandFailed, GitError, NotRunning, UnsavedWork
from .models import Pull, VmConfig
from .paths import StateLayout, VmPaths
from .quarantine import Quarantine, Snapshot


def refuse_if_unsaved(layout: StateLayout, vm: VmPaths, cfg: VmConfig) -> None:
    """Raise UnsavedWork naming, in one line, what deleting the workspace loses."""
    reasons = unsaved_work(layout, vm, cfg)
    if reasons:
        raise UnsavedWork(
            f"VM {vm.name}'s workspace has {'; '.join(reasons)}",
            hint=f"see it with 'agent-vm diff {vm.name}', keep it with 'agent-vm pull "
            f"{vm.name}' (--include-uncommitted for files not committed), "
            "or destroy with --force",
        )


def unsaved_work(layout: StateLayout, vm: VmPaths, cfg: VmConfig) -> list[str]:
    """Why deleting the workspace would lose work; empty when it would not."""
    try:
        with quarantine.opened(vm, layout.quarantine_lock(vm.name), cfg) as (q, snap):
            return _reasons(q, snap, cfg, pull.history(vm))
    except (GitError, CommandFailed, NotRunning) as exc:
        return [f"a repository that cannot be verified ({exc.message})"]


def _reasons(q: Quarantine, snap: Snapshot, cfg: VmConfig, done: Sequence[Pull]) -> list[str]:
    repo = Path(cfg.repo)
    reasons: list[str] = []
    if snap.problems:
        more = f" and {len(snap.problems) - 1} more" if len(snap.problems) > 1 else ""
        reasons.append(f"a repository that cannot be fully verified ({snap.problems[0]}{more})")
    ids = snap.all_ids()
    present = q.object_types(ids)
    missing = [i for i in ids if i not in present]
    if missing:
        reasons.append(
            f"{len(missing)} object(s) its refs or reflogs name that are missing (cannot verify)"
        )
    reasons += _lost_commits(q, snap, repo, cfg.commit, q.peel_commits(sorted(present)))
    uncommitted = _uncommitted(q, snap, repo, done)
    if uncommitted:
        reasons.append(f"uncommitted changes to {uncommitted} file(s)")
    if snap.worktree_heads:
        reasons.append(f"{len(snap.worktree_heads)} linked worktree(s) whose files are not checked")
    return reasons


def _lost_commits(
    q: Quarantine, snap: Snapshot, repo: Path, base: str, commit_of: dict[str, str]
) -> list[str]:
    """Commits the source repository does not reach, each counted once, where
    it is first found: on branches (named), then `_categories`."""
    unique = _not_elsewhere(q, repo, base, sorted(set(commit_of.values())))
    reasons = []
    attributed: set[str] = set()
    lost_branches = []
    for name, oid in sorted(snap.refs.items()):
        if name.startswith("refs/heads/") and oid in commit_of:
            mine = _walk(q, [commit_of[oid]], base) & unique
            if mine:
                lost_branches.append(name.removeprefix("refs/heads/"))
                attributed |= mine
    if attributed:
        reasons.append(
            f"{len(attributed)} commit(s) on branch(es) {', '.join(lost_branches)} "
            "that exist nowhere else"
        )
    for label, tips in _categories(snap):
        commits = [commit_of[t] for t in tips if t in commit_of]
        mine = (_walk(q, commits, base) & unique) - attributed
        attributed |= mine
        if mine:
            reasons.append(f"{len(mine)} commit(s) {label}")
    return reasons


def _categories(snap: Snapshot) -> list[tuple[str, list[str]]]:
    """Tips other than branches by where they are, in the order commits are
    attributed to them."""
    by_prefix: dict[str, list[str]] = {"tags": [], "stash": [], "other": []}
    for name, oid in snap.refs.items():
        if name.startswith("refs/heads/"):
            continue
        if name.startswith("refs/tags/"):
            by_prefix["tags"].append(oid)
        elif name == "refs/stash":
            by_prefix["stash"].append(oid)
        else:
            by_prefix["other"].append(oid)
    detached = [snap.head] if snap.head is not None and snap.head_ref is None else []
    stash_log = sorted(snap.reflogs.get("refs/stash", set()))
    logged = sorted({i for name, ids in snap.reflogs.items() if name != "refs/stash" for i in ids})
    return [
        ("on a detached HEAD", detached),
        ("checked out in linked worktrees", sorted(snap.worktree_heads.values())),
        ("reachable only from tags", by_prefix["tags"]),
        ("in the stash", by_prefix["stash"] + stash_log),
        ("reachable only from other refs", by_prefix["other"]),
        ("reachable only from the reflog", logged),
    ]


def _walk(q: Quarantine, tips: Sequence[str], base: str) -> set[str]:
    """Commits the tips reach, stopping at the base (and at shallow ends)."""
    if not tips:
        return set()
    stops = [f"^{b}" for b in q.object_types([base])]
    res = q.git_input(["rev-list", "--stdin"], [*tips, *stops])
    return set(res.stdout.split())


def _not_elsewhere(q: Quarantine, repo: Path, base: str, tips: Sequence[str]) -> set[str]:
    """The commits the tips reach that the source repository's refs do not."""
    # Source refs the quarantine also has bound the walk: a workspace that
    # merged the source's newer commits is not walked through them.
    known = [t for t, kind in q.object_types(gitops.ref_tips(repo)).items() if kind == "commit"]
    stops = [f"^{b}" for b in [*known, *q.object_types([base])]]
    candidates = (
        set(q.git_input(["rev-list", "--stdin"], [*tips, *stops]).stdout.split()) if tips else set()
    )
    with contextlib.suppress(CommandFailed):  # no source repository: nothing is elsewhere
        candidates -= gitops.reachable(repo, sorted(candidates))
    return candidates


def _uncommitted(q: Quarantine, snap: Snapshot, repo: Path, done: Sequence[Pull]) -> int:
    """How many files differ between the work tree and HEAD, unless a pull
    committed exactly this state into the source repository."""
    if snap.head_missing:
        return 0
    head_tree = q.tree_of(snap.head)
    tree = q.files_tree(snap, snap.head)
    if tree == head_tree:
        return 0
    saved = [p.commit for p in done if p.worktree_tree == tree]
    with contextlib.suppress(CommandFailed):
        if saved and gitops.reachable(repo, saved):
            return 0
    return len(q.changed_files(head_tree, tree))
