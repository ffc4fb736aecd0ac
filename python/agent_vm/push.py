"""`agent-vm push`: the source branch's newer commits, handed to the agent.

The host never writes into the workspace's repository (a push would run
receive-pack and its hooks there, as the host user). Instead the user's
own git makes a bundle of the branch in the source repository, SSH carries
it into the running guest, and the guest's git fetches it into
`origin/<branch>`, with whatever hooks the guest set, in the guest.
"""

from __future__ import annotations

import contextlib
import shlex
from dataclasses import dataclass
from pathlib import Path

from . import gitops, ssh, tools
from .errors import CommandFailed, GitError
from .models import VmConfig, WorkspaceShare
from .paths import VmPaths

GUEST_WORKSPACE = WorkspaceShare(host_path="/").mount_point


def guest_fetch(workspace: str) -> str:
    """The script the guest user runs: $1 is the branch (a valid ref name: no
    spaces, no ':'), the bundle arrives on stdin."""
    ws = shlex.quote(workspace)
    return (
        'set -e; f=$(mktemp); trap \'rm -f "$f"\' EXIT; cat >"$f"; '
        f'git -C {ws} fetch --quiet --no-tags "$f" "+refs/heads/$1:refs/remotes/origin/$1"; '
        f'git -C {ws} rev-parse --verify --quiet "refs/remotes/origin/$1^{{commit}}"'
    )


BUNDLE_TIMEOUT = 600.0


@dataclass
class Pushed:
    branch: str
    commit: str
    sent: bool  # False: the workspace already had everything


def push(vm: VmPaths, cfg: VmConfig, ssh_port: int) -> Pushed:
    repo = Path(cfg.repo)
    res = gitops.in_source(
        repo,
        "rev-parse",
        "--verify",
        "--quiet",
        "--end-of-options",
        f"refs/heads/{cfg.branch}^{{commit}}",
        check=False,
    )
    if not res.ok:
        raise GitError(
            f"the source repository {repo} has no branch {cfg.branch!r} to hand to VM {vm.name}"
        )
    tip = res.stdout.strip()
    base = cfg.commit
    if gitops.in_source(repo, "merge-base", "--is-ancestor", tip, base, check=False).ok:
        return Pushed(cfg.branch, tip, sent=False)
    has_base = gitops.in_source(repo, "cat-file", "-e", f"{base}^{{commit}}", check=False).ok
    bundle = vm.dir / "push.bundle"
    try:
        gitops.in_source(
            repo,
            "bundle",
            "create",
            "--quiet",
            str(bundle),
            f"refs/heads/{cfg.branch}",
            *([f"^{base}"] if has_base else []),
        )
        argv = ssh.command_argv(
            vm,
            cfg,
            ssh_port,
            ["sh", "-c", guest_fetch(GUEST_WORKSPACE), "agent-vm-push", cfg.branch],
            tty=False,
        )
        with open(bundle, "rb") as f:
            out = tools.run(argv, stdin=f, check=False, timeout=BUNDLE_TIMEOUT)
    finally:
        with contextlib.suppress(FileNotFoundError):
            bundle.unlink()
    if not out.ok or out.stdout.strip() != tip:
        why = (out.stderr.strip().splitlines() or ["it did not take the commits"])[-1]
        raise CommandFailed(f"the guest could not fetch {cfg.branch}: {why}")
    return Pushed(cfg.branch, tip, sent=True)
