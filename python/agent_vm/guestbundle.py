"""Work out of a disk workspace: a git bundle the guest makes, verified here.

A `--workspace-mode disk` VM has no directory on the host to read, so its
work leaves the only way a hostile guest cannot turn into anything but
data: over SSH the guest runs `GUEST_SCRIPT`, which bundles its branches,
tags and HEAD (everything the branch's base commit does not already have)
plus, when the work tree differs from HEAD, one commit of the work tree as
it is (`refs/agent-vm/worktree`, made with a temporary index so the
guest's own index is untouched). The host writes the bytes into a file
(bounded in size and time) and never runs git in the guest's repository:

* a private bare git directory in the VM's state dir (`bundle/git`), made
  by agent-vm, is the only repository git runs in; every git here has a
  scrubbed environment (`env -i`, no system or global config, an empty
  HOME) and settings that win over any file (no hooks, no fsmonitor,
  `transfer.fsckObjects`), so nothing of the guest's config, hooks or
  attributes can apply: a bundle carries objects and ref names, nothing
  else;
* the base commit comes from the user's own repository (trusted);
* `git bundle verify` checks the header and that the prerequisites are
  here, `git fetch` from the bundle re-checks every object (index-pack with
  fsck), and the ref names and ids are parsed as data and validated.

`pull`/`diff` read from this git directory (through the quarantine's
pluggable source, python/agent_vm/quarantine.py, once that lands) exactly
as from a shared workspace's copy; `destroy` asks it whether the guest has
work the user's repository lacks.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from . import ssh, tools
from .errors import GitError, UnsavedWork
from .fsutil import ensure_private_dir
from .models import Runtime, VmConfig, VmState
from .paths import VmPaths

# Where the guest's refs land in the private git directory.
GUEST_REFS = "refs/guest/"
WORKTREE_REF = "refs/agent-vm/worktree"
MAX_BUNDLE = 4 * 1024**3
TIMEOUT = 600.0
# The guest script's exit code for "nothing the base commit lacks".
NOTHING_NEW = 3

# Run by the guest user in the guest: $1 the base commit, $2 the workspace.
# It prints the bundle on stdout and nothing else.
GUEST_SCRIPT = r"""
set -eu
base="$1"
cd "$2"
export GIT_AUTHOR_NAME=agent-vm GIT_AUTHOR_EMAIL=agent-vm@localhost
export GIT_COMMITTER_NAME=agent-vm GIT_COMMITTER_EMAIL=agent-vm@localhost
index="$(mktemp)"
trap 'rm -f "$index"; git update-ref -d refs/agent-vm/worktree 2>/dev/null || true' EXIT
GIT_INDEX_FILE="$index" git read-tree HEAD
GIT_INDEX_FILE="$index" git add -A
tree="$(GIT_INDEX_FILE="$index" git write-tree)"
if [ "$tree" != "$(git rev-parse 'HEAD^{tree}')" ]; then
  commit="$(git commit-tree -p HEAD -m 'agent-vm: the work tree, uncommitted' "$tree")"
  git update-ref refs/agent-vm/worktree "$commit"
fi
if [ -z "$(git rev-list -n 1 --branches --tags HEAD --glob=refs/agent-vm "^$base")" ]; then
  exit 3
fi
git bundle create - --branches --tags HEAD --glob=refs/agent-vm "^$base"
"""

# Settings on every git command line here; they win over any file.
SETTINGS = (
    "core.hooksPath=/dev/null",
    "core.fsmonitor=false",
    "core.attributesFile=/dev/null",
    "core.pager=cat",
    "transfer.fsckObjects=true",
    "fetch.fsckObjects=true",
    "protocol.allow=never",
    "protocol.file.allow=always",
    "gc.auto=0",
    "maintenance.auto=false",
)

_HEX = re.compile(r"[0-9a-f]{40}([0-9a-f]{24})?")
_REF = re.compile(r"(HEAD|refs/(heads|tags|agent-vm)/[A-Za-z0-9._/@+-]{1,200})")


@dataclass
class GuestWork:
    """What the guest's repository holds beyond the base commit (data)."""

    refs: dict[str, str] = field(default_factory=dict)  # ref name -> id

    @property
    def uncommitted(self) -> bool:
        return WORKTREE_REF in self.refs

    @property
    def commits(self) -> dict[str, str]:
        return {r: i for r, i in self.refs.items() if r != WORKTREE_REF}


@dataclass(frozen=True)
class PrivateGit:
    """A bare git directory agent-vm made, and the only way git runs on it."""

    root: Path

    @property
    def git_dir(self) -> Path:
        return self.root / "git"

    def env(self, extra: Mapping[str, str] | None = None) -> list[str]:
        home = self.root / "home"
        env = {
            "PATH": os.environ.get("PATH", os.defpath),
            "HOME": str(home),
            "XDG_CONFIG_HOME": str(home),
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": "/dev/null",
            "GIT_ATTR_NOSYSTEM": "1",
            "GIT_TERMINAL_PROMPT": "0",
            "LC_ALL": "C",
            **(extra or {}),
        }
        return [f"{k}={v}" for k, v in env.items()]

    def git(self, *args: str, check: bool = True) -> tools.Result:
        tools.resolve("git")  # a missing git is MissingTool, not env's exit 127
        settings = [a for s in SETTINGS for a in ("-c", s)]
        argv = ["env", "-i", *self.env(), "git", f"--git-dir={self.git_dir}", *settings, *args]
        res = tools.run(argv, cwd=self.root, check=False, timeout=TIMEOUT)
        if check and not res.ok:
            why = (res.stderr.strip().splitlines() or [f"exit code {res.returncode}"])[-1]
            raise GitError(f"git {args[0]} refused the guest's bundle: {why}")
        return res

    def ensure(self) -> None:
        ensure_private_dir(self.root)
        ensure_private_dir(self.root / "home")
        if not (self.git_dir / "HEAD").exists():
            self.git("init", "--quiet", "--bare", "--template=")

    def has_commit(self, oid: str) -> bool:
        return self.git("cat-file", "-e", f"{oid}^{{commit}}", check=False).ok


def private_git(vm: VmPaths) -> PrivateGit:
    return PrivateGit(vm.dir / "bundle")


def parse_heads(text: str) -> dict[str, str]:
    """`git bundle list-heads` output as data: well-formed ids and the ref
    names a guest script makes, nothing else."""
    refs: dict[str, str] = {}
    for line in text.splitlines():
        oid, _, name = line.partition(" ")
        if not _HEX.fullmatch(oid) or not _REF.fullmatch(name) or ".." in name:
            raise GitError(f"the guest's bundle names a ref agent-vm does not take: {line!r:.120}")
        refs[name] = oid
    return refs


def fetch(vm: VmPaths, cfg: VmConfig, port: int, mount_point: str = "/workspace") -> GuestWork:
    """Have the running guest bundle its work and bring it into the VM's
    private git directory; what it holds beyond the base commit."""
    pg = private_git(vm)
    pg.ensure()
    # The base commit from the user's own repository: the bundle's prerequisite.
    if not pg.has_commit(cfg.commit):
        pg.git("fetch", "--quiet", "--no-tags", "--depth=1", f"file://{cfg.repo}", cfg.commit)
    bundle = pg.root / "incoming.bundle"
    with contextlib.suppress(FileNotFoundError):
        bundle.unlink()
    command = ["sh", "-c", GUEST_SCRIPT, "agent-vm-bundle", cfg.commit, mount_point]
    argv = ssh.command_argv(vm, cfg, port, command, tty=False)
    try:
        code, err, within = tools.run_to_file(argv, bundle, limit=MAX_BUNDLE, timeout=TIMEOUT)
        if not within:
            raise GitError(
                f"VM {vm.name}'s bundle exceeded {MAX_BUNDLE >> 30} GiB or {TIMEOUT:g}s; refused"
            )
        if code == NOTHING_NEW:
            return GuestWork()
        if code != 0:
            last = (err.strip().splitlines() or [f"exit code {code}"])[-1]
            raise GitError(f"VM {vm.name} could not bundle its workspace: {last:.200}")
        pg.git("bundle", "verify", "--quiet", str(bundle))
        refs = parse_heads(pg.git("bundle", "list-heads", str(bundle)).stdout)
        # index-pack with fsck checks every object as it arrives.
        pg.git(
            "fetch",
            "--quiet",
            "--no-tags",
            "--no-write-fetch-head",
            str(bundle),
            *(f"+{name}:{GUEST_REFS}{name}" for name in refs if name != "HEAD"),
        )
        return GuestWork(refs)
    finally:
        with contextlib.suppress(FileNotFoundError):
            bundle.unlink()


def unsaved(work: GuestWork, repo: Path) -> list[str]:
    """Why deleting the guest's workspace would lose work: uncommitted
    changes, or commits the user's repository does not have."""
    reasons = []
    if work.uncommitted:
        reasons.append("uncommitted changes")
    missing = {oid for oid in work.commits.values() if not _in_repo(repo, oid)}
    if missing:
        reasons.append(f"{len(missing)} ref(s) whose commits are not in {repo}")
    return reasons


def _in_repo(repo: Path, oid: str) -> bool:
    # The user's own repository, a trusted one; `oid` was validated above.
    return tools.run(
        ["git", "-C", str(repo), "cat-file", "-e", f"{oid}^{{commit}}"], check=False
    ).ok


def refuse_unsaved(vm: VmPaths, cfg: VmConfig, rt: Runtime, alive: bool) -> None:
    """UnsavedWork unless the running guest's workspace holds nothing the
    user's repository lacks (destroy without --force). A VM that is not
    running cannot be asked: refused too."""
    if not (alive and rt.state == VmState.RUNNING):
        raise UnsavedWork(
            f"VM {vm.name}'s workspace is on its own disk, which agent-vm reads only from "
            f"the running guest (it is {rt.state.value})",
            hint="start it and 'agent-vm pull' your work, or destroy with --force",
        )
    reasons = unsaved(fetch(vm, cfg, rt.ssh_port or cfg.ssh_port), Path(cfg.repo))
    if reasons:
        raise UnsavedWork(
            f"VM {vm.name}'s workspace has {', '.join(reasons)}",
            hint="'agent-vm pull' your work, or destroy with --force",
        )
