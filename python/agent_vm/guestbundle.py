"""The transport of a disk workspace's work: the guest bundles it, SSH
carries the bytes into a file of ours. Nothing here reads the bundle:
quarantine.BundleSource verifies and unpacks it and parses its refs.

A `--workspace-mode disk` VM has no directory on the host to read. Over SSH
the guest user runs `GUEST_SCRIPT` in the guest's workspace (the guest's
own git, with whatever config the guest set: its business), which bundles
every ref and HEAD beyond the branch's base commit. A bundle carries only
refs and objects, so two things the host needs are made into refs in
agent-vm's namespace for the duration of the script:

* `WORKTREE_REF`: a commit of the work tree as it is, when it differs
  from HEAD (made with a copy of the guest's index, whose file stats spare
  `git add -A` from hashing every file again: on a 50 000-file tree a
  fresh index made a suspend take 20 s more; the guest's own index is
  untouched);
* `REFLOG_PREFIX<id>`: each commit a reflog names (destroy must not lose a
  commit only the reflog still reaches).

The script deletes agent-vm's namespace (`refs/agent-vm/`) in the guest's
repository before and after, so nothing of it stays behind. The bytes are
bounded in size and time.
"""

from __future__ import annotations

from pathlib import Path

from . import ssh, tools
from .errors import GitError
from .models import VmConfig
from .paths import VmPaths
from .push import GUEST_WORKSPACE

NAMESPACE = "refs/agent-vm/"
WORKTREE_REF = NAMESPACE + "worktree"
REFLOG_PREFIX = NAMESPACE + "reflog/"
MAX_BUNDLE = 4 * 1024**3
TIMEOUT = 600.0
# The guest script's exit code for "nothing the base commit lacks".
NOTHING_NEW = 3

# Run by the guest user in the guest: $1 the base commit, $2 the workspace.
# It prints the bundle on stdout and nothing else.
GUEST_SCRIPT = rf"""
set -eu
base="$1"
cd "$2"
export GIT_AUTHOR_NAME=agent-vm GIT_AUTHOR_EMAIL=agent-vm@localhost
export GIT_COMMITTER_NAME=agent-vm GIT_COMMITTER_EMAIL=agent-vm@localhost
forget() {{
  git for-each-ref --format='delete %(refname)' {NAMESPACE} | git update-ref --stdin
}}
index="$(mktemp)"
trap 'rm -f "$index"; forget' EXIT
forget
git rev-list --no-walk --reflog | sed 's|.*|create {REFLOG_PREFIX}& &|' | git update-ref --stdin
own="$(git rev-parse --git-path index)"
if [ -f "$own" ]; then
  cp "$own" "$index"
else
  GIT_INDEX_FILE="$index" git read-tree HEAD
fi
GIT_INDEX_FILE="$index" git add -A
tree="$(GIT_INDEX_FILE="$index" git write-tree)"
if [ "$tree" != "$(git rev-parse 'HEAD^{{tree}}')" ]; then
  commit="$(git commit-tree -p HEAD -m 'agent-vm: the work tree, uncommitted' "$tree")"
  git update-ref {WORKTREE_REF} "$commit"
fi
if [ -z "$(git rev-list -n 1 --all "^$base")" ]; then
  exit {NOTHING_NEW}
fi
git bundle create - --all "^$base"
"""


def fetch(vm: VmPaths, cfg: VmConfig, port: int, dest: Path) -> bool:
    """Have the running guest bundle its work into the new file `dest`;
    False when it has nothing beyond the base commit (no bundle then)."""
    command = ["sh", "-c", GUEST_SCRIPT, "agent-vm-bundle", cfg.commit, GUEST_WORKSPACE]
    argv = ssh.command_argv(vm, cfg, port, command, tty=False)
    code, err, within = tools.run_to_file(argv, dest, limit=MAX_BUNDLE, timeout=TIMEOUT)
    if not within:
        raise GitError(
            f"VM {vm.name}'s bundle exceeded {MAX_BUNDLE >> 30} GiB or {TIMEOUT:g}s; refused"
        )
    if code == NOTHING_NEW:
        return False
    if code != 0:
        last = (err.strip().splitlines() or [f"exit code {code}"])[-1]
        raise GitError(f"VM {vm.name} could not bundle its workspace: {last:.200}")
    return True
