"""Git in the user's own repository: which repository and branch we are in,
making workspaces, what the repository already has.

Nothing here runs git in a workspace after it is made: the guest writes
there, so every later read goes through `quarantine`.

The per-branch workspace is a shallow clone of one commit (`--depth 1`), so
making it costs the size of the tree, not of the history. It is a real,
self-contained repository (no alternates pointing at a host path the guest
cannot see), with `origin` pointing back at the source repository.
"""

from __future__ import annotations

import os
import tempfile
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from . import sanitize, tools
from .errors import CommandFailed, GitError, InvalidInput
from .events import EventKind, emit, warn

HEADS = "refs/heads/"


@dataclass(frozen=True)
class Checkout:
    repo: Path
    branch: str  # a branch name, or "detached-<sha12>" for a detached HEAD
    commit: str
    detached: bool
    current: bool = False  # the repository's checked-out HEAD (its work tree may differ)


def _git(
    repo: Path, *args: str, check: bool = True, stdin: IO[bytes] | None = None
) -> tools.Result:
    return tools.run(["git", "-C", str(repo), *args], check=check, stdin=stdin)


def in_source(repo: Path, *args: str, check: bool = True) -> tools.Result:
    """git in the user's own repository (trusted: never a workspace)."""
    return _git(repo, *args, check=check)


def _ask(repo: Path, *args: str) -> tools.Result:
    """A read-only question to git (fast: `status` asks them)."""
    return tools.query(["git", "-C", str(repo), *args])


def repo_root(cwd: Path) -> Path:
    res = _ask(cwd, "rev-parse", "--show-toplevel")
    if res.ok:
        return Path(res.stdout.rstrip("\n"))
    if _ask(cwd, "rev-parse", "--is-bare-repository").stdout.strip() == "true":
        raise GitError(
            f"{cwd} is a bare repository: it has no checked-out branch to make a VM for",
            hint="run agent-vm in a clone of it (git clone) or a worktree (git worktree add)",
        )
    if _ask(cwd, "rev-parse", "--is-inside-git-dir").stdout.strip() == "true":
        raise GitError(
            f"{cwd} is inside a repository's .git directory",
            hint="run agent-vm from the repository's working tree",
        )
    why = res.stderr.strip().splitlines()
    if why and "not a git repository" not in why[-1]:
        # e.g. "detected dubious ownership": a repository git refuses to use
        raise GitError(f"git cannot use the repository at {cwd}: {why[-1].removeprefix('fatal: ')}")
    raise GitError(
        f"{cwd} is not inside a git repository",
        hint="run agent-vm from your project's checkout",
    )


def valid_branch_name(repo: Path, branch: str) -> bool:
    return _ask(repo, "check-ref-format", "--branch", branch).ok and not branch.startswith("-")


def resolve(repo: Path, branch: str | None) -> Checkout:
    """The branch to use: `branch` if given, else the current one (or HEAD)."""
    # The full ref, not --short: a tag or a remote named like the branch
    # makes the short form "heads/<branch>".
    head = _ask(repo, "symbolic-ref", "--quiet", "HEAD")
    head_ref = head.stdout.rstrip("\n") if head.ok else None
    if branch is None:
        commit = _ask(repo, "rev-parse", "--verify", "HEAD^{commit}")
        if not commit.ok:
            raise GitError(f"{repo} has no commits yet", hint="commit something first")
        sha = commit.stdout.strip()
        if head_ref is not None and head_ref.startswith(HEADS):
            return Checkout(repo, head_ref.removeprefix(HEADS), sha, detached=False, current=True)
        return Checkout(repo, f"detached-{sha[:12]}", sha, detached=True, current=True)
    if not valid_branch_name(repo, branch):
        raise InvalidInput(f"{branch!r} is not a valid branch name")
    for ref in (f"{HEADS}{branch}", f"refs/remotes/origin/{branch}"):
        res = _ask(
            repo, "rev-parse", "--verify", "--quiet", "--end-of-options", f"{ref}^{{commit}}"
        )
        if res.ok:
            current = head_ref == f"{HEADS}{branch}"
            return Checkout(repo, branch, res.stdout.strip(), detached=False, current=current)
    raise GitError(
        f"unknown branch {branch!r} in {repo}",
        hint="create it first (git branch NAME) or pick one from 'git branch'",
    )


def file_url(path: Path) -> str:
    """`path` as a file:// URL: git percent-decodes these, so a path with
    `%41` in it must reach git as `%2541`."""
    return "file://" + urllib.parse.quote(os.fsencode(path), safe="/")


def make_workspace(src: Checkout, dest: Path) -> None:
    """Make `dest` a one-commit clone of `src` with origin = the source repo.

    Refs are written by their full names with plumbing (update-ref,
    symbolic-ref, config), never as short names a tag could shadow; that
    also serves a branch git's porcelain refuses to name (`refs/heads/HEAD`).
    """
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
            file_url(src.repo),
            f"+{src.commit}:{base_ref}",
        )
        if src.detached:
            _git(dest, "update-ref", "--no-deref", "HEAD", src.commit)
        else:
            branch_ref = f"{HEADS}{src.branch}"
            _git(dest, "update-ref", branch_ref, src.commit)
            _git(dest, "symbolic-ref", "HEAD", branch_ref)
            # The upstream, as `git branch --set-upstream-to` would record it.
            _git(dest, "config", f"branch.{src.branch}.remote", "origin")
            _git(dest, "config", f"branch.{src.branch}.merge", branch_ref)
        _git(dest, "reset", "--quiet", "--hard", src.commit)
    except CommandFailed as exc:
        raise GitError(f"could not make the workspace: {exc.message}") from None


def object_format(repo: Path) -> str:
    """sha1 or sha256: what a quarantine for this repository's workspaces uses."""
    res = _ask(repo, "rev-parse", "--show-object-format")
    fmt = res.stdout.strip()
    return fmt if res.ok and fmt in ("sha1", "sha256") else "sha1"


def reachable(repo: Path, commits: Sequence[str]) -> set[str]:
    """Those of `commits` that some ref of `repo` reaches (the trusted side:
    the user's own repository, never a workspace)."""
    if not commits:
        return set()
    with tempfile.TemporaryFile() as f:
        f.write("".join(f"{c}\n" for c in commits).encode())
        f.seek(0)
        types = _git(repo, "cat-file", "--batch-check=%(objectname) %(objecttype)", stdin=f)
    present = [line.split()[0] for line in types.stdout.splitlines() if line.endswith(" commit")]
    if not present:
        return set()
    with tempfile.TemporaryFile() as f:
        f.write("".join(f"{c}\n" for c in present).encode())
        f.seek(0)
        # --stdin before --not: the ids are the walk's tips, every ref its end.
        unreachable = _git(repo, "rev-list", "--stdin", "--not", "--all", stdin=f)
    return set(present) - set(unreachable.stdout.split())


def pack_objects(repo: Path, base: Path, ids: IO[bytes]) -> str:
    """Pack the objects `ids` lists (one a line) from `repo` into
    `<base>-<name>.pack`; returns the name."""
    return _git(repo, "pack-objects", "-q", str(base), stdin=ids).stdout.strip()


def ref_tips(repo: Path) -> list[str]:
    """The object ids every ref of `repo` points at."""
    res = _ask(repo, "for-each-ref", "--format=%(objectname)")
    return sorted(set(res.stdout.split())) if res.ok else []


def left_out(src: Checkout) -> tuple[list[str], list[str]]:
    """What of `src` a workspace made by make_workspace lacks: the
    repository's uncommitted changes (when `src` is its checked-out HEAD),
    as `git status --short` shows them, and the commit's submodules (a
    one-commit clone has their directories, empty)."""
    changes: list[str] = []
    if src.current:
        # git quotes paths with control characters in this format.
        res = _ask(
            src.repo, "status", "--porcelain", "--untracked-files=normal", "--ignore-submodules"
        )
        changes = [line for line in res.stdout.splitlines() if line.strip()] if res.ok else []
    res = _ask(
        src.repo,
        "config",
        f"--blob={src.commit}:.gitmodules",
        "--null",
        "--get-regexp",
        r"^submodule\..*\.path$",
    )
    # --null: "key\nvalue\0" per entry, whatever the path contains.
    records = res.stdout.split("\0") if res.ok else []
    submodules = [sanitize.text(r.split("\n", 1)[1]) for r in records if "\n" in r]
    return changes, submodules


def report_left_out(src: Checkout, vm: str) -> None:
    """Warn that the workspace lacks uncommitted changes or submodules; with
    -v, each one as its own line."""
    changes, submodules = left_out(src)
    if changes:
        warn(
            f"{len(changes)} uncommitted change(s) in {src.repo} are not in the workspace "
            f"(it is commit {src.commit[:12]}; -v lists them)",
            vm=vm,
            changes=changes,
        )
    if submodules:
        warn(
            f"{len(submodules)} submodule(s) are empty directories in the workspace "
            "(-v lists them)",
            vm=vm,
            submodules=submodules,
        )
    for line in changes:
        emit(EventKind.WORKSPACE_LEFT_OUT, f"not in the workspace: {line}", vm=vm)
    for path in submodules:
        emit(EventKind.WORKSPACE_LEFT_OUT, f"submodule not in the workspace: {path}", vm=vm)


def branches(repo: Path) -> list[str]:
    # Full names: --short turns a branch shadowed by a tag into "heads/<name>".
    res = _ask(repo, "for-each-ref", "--format=%(refname)", HEADS)
    return [r.removeprefix(HEADS) for r in res.stdout.splitlines()] if res.ok else []
