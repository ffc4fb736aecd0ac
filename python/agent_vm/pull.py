"""`agent-vm pull`: the agent's commits into the source repository.

The commits travel as a bundle made in the quarantine (from the workspace's
objects, read as data) and fetched by the user's own git in the user's own
repository, which only reads it: no git ever runs with the workspace as its
repository, nothing is pushed into the source repository (receive-pack
would run its hooks), and the fetch writes no FETCH_HEAD. Then one
`update-ref` sets `agent/<branch>`, compare-and-swap against the value it
checked. The user's working tree, index, stash and current branch are never
touched, and the branch checked out anywhere is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from . import gitops, quarantine, sanitize, store
from .errors import GitError, InvalidInput, NotFound
from .events import warn
from .models import Pull, PullLog, VmConfig
from .paths import StateLayout, VmPaths
from .quarantine import Quarantine

# The quarantine's ref for what is being pulled (bundles need a ref name).
PULL_REF = "refs/agent-vm/pull"
AUTHOR = {
    "GIT_AUTHOR_NAME": "agent-vm",
    "GIT_AUTHOR_EMAIL": "agent-vm@localhost",
    "GIT_COMMITTER_NAME": "agent-vm",
    "GIT_COMMITTER_EMAIL": "agent-vm@localhost",
}


@dataclass
class Pulled:
    ref: str
    commit: str | None  # None: there was nothing to pull
    old: str | None  # what the ref was before
    commits: int  # commits new to the source repository's ref
    left_uncommitted: int  # files changed but not committed, not pulled
    snapshot: str | None  # the commit made of the uncommitted files


def target_ref(repo: Path, cfg: VmConfig, into: str | None) -> str:
    """`refs/heads/agent/<branch>`, or the branch --into names."""
    name = into if into is not None else f"agent/{cfg.branch}"
    if name.startswith("refs/"):
        if not name.startswith("refs/heads/"):
            raise InvalidInput(f"--into {name!r}: only a branch (refs/heads/…) can be set")
        name = name.removeprefix("refs/heads/")
    if not gitops.valid_branch_name(repo, name):
        raise InvalidInput(f"{name!r} is not a valid branch name")
    return f"refs/heads/{name}"


def pull(
    layout: StateLayout,
    vm: VmPaths,
    cfg: VmConfig,
    *,
    into: str | None = None,
    force: bool = False,
    include_uncommitted: bool = False,
) -> Pulled:
    repo = Path(cfg.repo)
    if not repo.is_dir():
        raise NotFound(f"the source repository {repo} is gone")
    ref = target_ref(repo, cfg, into)
    _refuse_checked_out(repo, ref)
    with quarantine.opened(vm, layout.quarantine_lock(vm.name), cfg) as (q, snap):
        for problem in snap.problems:
            warn(f"VM {vm.name}'s workspace: {sanitize.text(problem)}", vm=vm.name)
        head = snap.require_head()
        head_tree = q.tree_of(head)
        tree = q.files_tree(snap, head)
        changed = q.changed_files(head_tree, tree)
        tip, snapshot = head, None
        if include_uncommitted and changed:
            tip = snapshot = _earlier_snapshot(vm, q, head, tree) or _commit_files(
                q, tree, head, vm, cfg
            )
        result = Pulled(ref, None, None, 0, 0 if snapshot else len(changed), snapshot)
        base = [cfg.commit] if q.object_types([cfg.commit]) else []
        if tip is None or not _count(q, tip, base):
            return result
        result.old = _current(repo, ref)
        result.commit = tip
        if result.old == tip:
            return result
        _fetch(q, repo, tip, base)
        if result.old is not None and not force and not _is_ancestor(repo, result.old, tip):
            was_snapshot = any(p.commit == result.old and p.worktree_tree for p in history(vm))
            raise GitError(
                f"refusing to move {ref.removeprefix('refs/heads/')} from {result.old[:12]} to "
                f"{tip[:12]}: not a fast-forward (it has commits the workspace lacks)",
                hint=(
                    "it holds the files an earlier --include-uncommitted took; "
                    if was_snapshot
                    else ""
                )
                + "pull --into another branch, or --force to overwrite it",
            )
        result.commits = _count_in(repo, tip, result.old)
        gitops.in_source(
            repo,
            "update-ref",
            "--no-deref",
            "-m",
            f"agent-vm pull from VM {vm.name}",
            ref,
            tip,
            result.old or "0" * len(tip),
        )
        _record(
            vm,
            Pull(
                ref=ref,
                commit=tip,
                head=head,
                worktree_tree=tree if snapshot else None,
                at=datetime.now(UTC),
            ),
        )
        return result


def _commit_files(q: Quarantine, tree: str, head: str | None, vm: VmPaths, cfg: VmConfig) -> str:
    message = (
        f"agent-vm: files not committed in VM {vm.name}\n\n"
        f"The workspace of branch {cfg.branch} as the agent left it, committed by\n"
        "'agent-vm pull --include-uncommitted' so nothing is dropped.\n"
    )
    parents = ["-p", head] if head is not None else []
    return q.git("commit-tree", tree, *parents, "-m", message, env=AUTHOR).stdout.strip()


def _earlier_snapshot(vm: VmPaths, q: Quarantine, head: str | None, tree: str) -> str | None:
    """The commit an earlier pull made of this very state: pulling it again
    changes nothing (a new commit would differ by its date alone)."""
    for p in reversed(history(vm)):
        if p.head == head and p.worktree_tree == tree and q.object_types([p.commit]):
            return p.commit
    return None


def _count(q: Quarantine, tip: str, base: list[str]) -> int:
    res = q.git("rev-list", "--count", tip, *(f"^{b}" for b in base))
    return int(res.stdout.strip() or 0)


def _fetch(q: Quarantine, repo: Path, tip: str, base: list[str]) -> None:
    bundle = q.root / "pull.bundle"
    q.git("update-ref", "--no-deref", PULL_REF, tip)
    q.git("bundle", "create", "--quiet", str(bundle), PULL_REF, *(f"^{b}" for b in base))
    try:
        res = gitops.in_source(
            repo,
            "fetch",
            "--quiet",
            "--no-write-fetch-head",
            "--no-tags",
            "--recurse-submodules=no",
            "--no-auto-maintenance",
            str(bundle),
            PULL_REF,
            check=False,
        )
    finally:
        bundle.unlink(missing_ok=True)
    if not res.ok:
        why = (res.stderr.strip().splitlines() or ["failed"])[-1]
        raise GitError(f"the source repository could not take the agent's commits: {why}")


def _current(repo: Path, ref: str) -> str | None:
    res = gitops.in_source(repo, "rev-parse", "--verify", "--quiet", ref, check=False)
    return res.stdout.strip() if res.ok else None


def _is_ancestor(repo: Path, old: str, new: str) -> bool:
    return gitops.in_source(repo, "merge-base", "--is-ancestor", old, new, check=False).ok


def _count_in(repo: Path, tip: str, old: str | None) -> int:
    """Commits the ref gains: beyond its old value, or beyond every ref."""
    stop = [f"^{old}"] if old else ["--not", "--all"]
    return int(gitops.in_source(repo, "rev-list", "--count", tip, *stop).stdout.strip() or 0)


def _refuse_checked_out(repo: Path, ref: str) -> None:
    res = gitops.in_source(repo, "worktree", "list", "--porcelain")
    path = ""
    for line in res.stdout.splitlines():
        if line.startswith("worktree "):
            path = line.removeprefix("worktree ")
        elif line == f"branch {ref}":
            branch = ref.removeprefix("refs/heads/")
            raise GitError(
                f"refusing to update {branch}: it is checked out in {path}",
                hint="pull --into another branch",
            )


def history(vm: VmPaths) -> list[Pull]:
    if not vm.pulls.exists():
        return []
    return store.load(vm.pulls, PullLog, "delete it (destroy then asks for --force)").pulls


def _record(vm: VmPaths, entry: Pull) -> None:
    store.save(vm.pulls, PullLog(pulls=[*history(vm), entry]))


__all__ = ["Pulled", "history", "pull", "target_ref"]
