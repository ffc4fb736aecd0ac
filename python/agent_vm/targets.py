"""Which VM a command means.

A VM belongs to one (repository, branch): its name carries a hash of both,
so two repositories with a `main` each have their own VM. `create` and `up`
therefore resolve only the current repository's branch. The other verbs
take a VM name (see `agent-vm list`), a branch of the current repository,
or nothing (the current branch); outside a repository a branch name is
accepted when exactly one VM has it. An argument that could mean two VMs is
an error that lists them.
"""

from __future__ import annotations

from pathlib import Path

from . import gitops, store
from .context import Context
from .errors import AgentVmError, GitError, InvalidInput, NotFound
from .names import is_vm_name, vm_name
from .paths import VmPaths


def for_branch(ctx: Context, branch: str | None) -> tuple[gitops.Checkout, VmPaths]:
    """The current repository's `branch` (default: the current one) and the
    VM it has or would have."""
    repo = gitops.repo_root(ctx.cwd)
    checkout = gitops.resolve(repo, branch)
    return checkout, ctx.layout.vm(vm_name(str(repo), checkout.branch))


def resolve(ctx: Context, arg: str | None) -> VmPaths:
    layout = ctx.layout
    by_name = layout.vm(arg) if arg is not None and is_vm_name(arg) else None
    if by_name is not None and not by_name.dir.exists():
        by_name = None
    try:
        repo: Path | None = gitops.repo_root(ctx.cwd)
    except AgentVmError as exc:
        if arg is None:
            if not isinstance(exc, GitError):
                raise
            # Why there is no repository (none, a bare one, …), and the way out.
            raise GitError(exc.message, hint="name the VM (see 'agent-vm list')") from None
        repo = None
    if repo is None:
        assert arg is not None
        if by_name is not None:
            return by_name
        return _unique_branch(ctx, arg)
    branch = arg if arg is not None else gitops.resolve(repo, None).branch
    candidate = layout.vm(vm_name(str(repo), branch))
    here = candidate if candidate.dir.exists() else None
    if here is not None and by_name is not None and here != by_name:
        raise InvalidInput(
            f"{arg!r} is both a VM name and a branch of {repo} with a VM ({here.name})",
            hint=f"name the VM: agent-vm … {here.name} (or {by_name.name})",
        )
    found = here or by_name
    if found is not None:
        return found
    what = f"{'the current ' if arg is None else ''}branch {branch!r} of {repo}"
    elsewhere = _vms_with_branch(ctx, branch)
    hint = (
        f"VMs of other repositories with that branch: {', '.join(elsewhere)} (name one)"
        if elsewhere
        else "create one with 'agent-vm up' or see 'agent-vm list'"
    )
    raise NotFound(f"no VM for {what}", hint=hint)


def _vms_with_branch(ctx: Context, branch: str) -> list[str]:
    found = []
    for name in store.vm_names(ctx.layout):
        try:
            if store.load_config(ctx.layout.vm(name)).branch == branch:
                found.append(name)
        except AgentVmError:
            continue
    return found


def _unique_branch(ctx: Context, branch: str) -> VmPaths:
    matches = _vms_with_branch(ctx, branch)
    if len(matches) == 1:
        return ctx.layout.vm(matches[0])
    if matches:
        raise InvalidInput(
            f"branch {branch!r} has VMs in several repositories: {', '.join(matches)}",
            hint="name one of them, or run the command in the repository",
        )
    raise NotFound(
        f"no VM named {branch!r} and none for a branch {branch!r}", hint="see 'agent-vm list'"
    )
