"""Git: which repository and branch we are in, making and checking workspaces.

The per-branch workspace is a shallow clone of one commit (`--depth 1`), so
making it costs the size of the tree, not of the history. It is a real,
self-contained repository (no alternates pointing at a host path the guest
cannot see), with `origin` pointing back at the source repository.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from . import tools
from .errors import CommandFailed, GitError, InvalidInput


@dataclass(frozen=True)
class Checkout:
    repo: Path
    branch: str  # a branch name, or "detached-<sha12>" for a detached HEAD
    commit: str
    detached: bool


def _git(repo: Path, *args: str, check: bool = True) -> tools.Result:
    return tools.run(["git", "-C", str(repo), *args], check=check)


def _ask(repo: Path, *args: str) -> tools.Result:
    """A read-only question to git (fast: `status` asks them)."""
    return tools.query(["git", "-C", str(repo), *args])


def repo_root(cwd: Path) -> Path:
    res = _ask(cwd, "rev-parse", "--show-toplevel")
    if not res.ok:
        raise GitError(
            f"{cwd} is not inside a git repository",
            hint="run agent-vm from your project's checkout",
        )
    return Path(res.stdout.strip())


def _valid_branch_name(repo: Path, branch: str) -> bool:
    return _ask(repo, "check-ref-format", "--branch", branch).ok and not branch.startswith("-")


def resolve(repo: Path, branch: str | None) -> Checkout:
    """The branch to use: `branch` if given, else the current one (or HEAD)."""
    if branch is None:
        head = _ask(repo, "symbolic-ref", "--quiet", "--short", "HEAD")
        commit = _ask(repo, "rev-parse", "--verify", "HEAD^{commit}")
        if not commit.ok:
            raise GitError(f"{repo} has no commits yet", hint="commit something first")
        sha = commit.stdout.strip()
        if head.ok:
            return Checkout(repo, head.stdout.strip(), sha, detached=False)
        return Checkout(repo, f"detached-{sha[:12]}", sha, detached=True)
    if not _valid_branch_name(repo, branch):
        raise InvalidInput(f"{branch!r} is not a valid branch name")
    for ref in (f"refs/heads/{branch}", f"refs/remotes/origin/{branch}"):
        res = _ask(
            repo, "rev-parse", "--verify", "--quiet", "--end-of-options", f"{ref}^{{commit}}"
        )
        if res.ok:
            return Checkout(repo, branch, res.stdout.strip(), detached=False)
    raise GitError(
        f"unknown branch {branch!r} in {repo}",
        hint="create it first (git branch NAME) or pick one from 'git branch'",
    )


def make_workspace(src: Checkout, dest: Path) -> None:
    """Make `dest` a one-commit clone of `src` with origin = the source repo."""
    base_ref = f"refs/remotes/origin/{src.branch}"
    try:
        tools.run(["git", "init", "--quiet", str(dest)])
        _git(dest, "remote", "add", "origin", str(src.repo))
        # Fetch by commit id: the branch may move meanwhile, and a detached
        # HEAD has no name to fetch. file:// makes git honour --depth.
        _git(
            dest,
            "fetch",
            "--quiet",
            "--depth=1",
            "--no-tags",
            f"file://{src.repo}",
            f"+{src.commit}:{base_ref}",
        )
        if src.detached:
            _git(dest, "checkout", "--quiet", "--detach", base_ref)
        else:
            _git(dest, "checkout", "--quiet", "-B", src.branch, base_ref)
            _git(dest, "branch", "--quiet", f"--set-upstream-to=origin/{src.branch}")
    except CommandFailed as exc:
        raise GitError(f"could not make the workspace: {exc.message}") from None


def unsaved_work(workspace: Path) -> list[str]:
    """Why deleting `workspace` would lose work; empty when it would not."""
    if not (workspace / ".git").exists():
        return []
    reasons: list[str] = []
    status = _git(workspace, "status", "--porcelain", "--untracked-files=normal", check=False)
    if not status.ok:
        return [f"git status failed: {status.stderr.strip()}"]
    changed = [line for line in status.stdout.splitlines() if line.strip()]
    if changed:
        reasons.append(f"{len(changed)} uncommitted change(s)")
    # Commits on any local branch or HEAD that no remote-tracking ref has.
    unpushed = _git(
        workspace, "rev-list", "--count", "HEAD", "--branches", "--not", "--remotes", check=False
    )
    if unpushed.ok and unpushed.stdout.strip() not in ("", "0"):
        reasons.append(f"{unpushed.stdout.strip()} commit(s) that exist nowhere else")
    stash = _git(workspace, "stash", "list", check=False)
    if stash.ok and stash.stdout.strip():
        reasons.append("stashed changes")
    return reasons


def branches(repo: Path) -> list[str]:
    res = _ask(repo, "for-each-ref", "--format=%(refname:short)", "refs/heads")
    return res.stdout.split() if res.ok else []
