"""targets: which VM a command means. A VM belongs to one (repository,
branch); two repositories' `main` are two VMs, and a command run in one
repository never reaches the other's."""

from __future__ import annotations

from pathlib import Path

import pytest
from agent_vm import targets
from agent_vm.context import Context
from agent_vm.errors import GitError, InvalidInput, NotFound
from agent_vm.names import vm_name
from agent_vm.paths import StateLayout
from unit_fakes import git, make_repo, vm_config, write_vm


@pytest.fixture
def two_repos(tmp_path: Path) -> tuple[StateLayout, Path, Path, str, str]:
    layout = StateLayout(tmp_path / "state")
    a, b = make_repo(tmp_path / "a"), make_repo(tmp_path / "b")
    name_a, name_b = vm_name(str(a), "main"), vm_name(str(b), "main")
    write_vm(layout, vm_config(name_a, repo=str(a)))
    write_vm(layout, vm_config(name_b, repo=str(b)))
    return layout, a, b, name_a, name_b


def ctx_in(layout: StateLayout, cwd: Path) -> Context:
    return Context(layout=layout, cwd=cwd)


def test_each_repository_reaches_its_own_vm(
    two_repos: tuple[StateLayout, Path, Path, str, str],
) -> None:
    layout, a, b, name_a, name_b = two_repos
    for repo, mine in ((a, name_a), (b, name_b)):
        assert targets.resolve(ctx_in(layout, repo), None).name == mine
        assert targets.resolve(ctx_in(layout, repo), "main").name == mine
        assert targets.for_branch(ctx_in(layout, repo), "main")[1].name == mine
    # A VM name works from anywhere.
    assert targets.resolve(ctx_in(layout, a), name_b).name == name_b


def test_a_branch_without_a_vm_here_is_not_taken_from_elsewhere(
    two_repos: tuple[StateLayout, Path, Path, str, str], tmp_path: Path
) -> None:
    layout, _, _, name_a, name_b = two_repos
    c = make_repo(tmp_path / "c")
    with pytest.raises(NotFound) as exc:
        targets.resolve(ctx_in(layout, c), "main")
    assert exc.value.hint is not None
    assert name_a in exc.value.hint and name_b in exc.value.hint
    # `up`/`create` in c get a VM of c's own.
    assert targets.for_branch(ctx_in(layout, c), "main")[1].name == vm_name(str(c), "main")


def test_outside_a_repository_an_ambiguous_branch_lists_the_vms(
    two_repos: tuple[StateLayout, Path, Path, str, str], tmp_path: Path
) -> None:
    layout, _, _, name_a, name_b = two_repos
    nowhere = tmp_path / "nowhere"
    nowhere.mkdir()
    with pytest.raises(InvalidInput) as exc:
        targets.resolve(ctx_in(layout, nowhere), "main")
    assert name_a in exc.value.message and name_b in exc.value.message
    with pytest.raises(GitError, match="not inside a git repository") as no_repo:
        targets.resolve(ctx_in(layout, nowhere), None)
    assert no_repo.value.hint == "name the VM (see 'agent-vm list')"


def test_outside_a_repository_a_unique_branch_is_enough(tmp_path: Path) -> None:
    layout = StateLayout(tmp_path / "state")
    repo = make_repo(tmp_path / "r")
    git(repo, "branch", "feature/x")
    name = vm_name(str(repo), "feature/x")
    write_vm(layout, vm_config(name, repo=str(repo), branch="feature/x"))
    nowhere = tmp_path / "nowhere"
    nowhere.mkdir()
    assert targets.resolve(ctx_in(layout, nowhere), "feature/x").name == name
    with pytest.raises(NotFound):
        targets.resolve(ctx_in(layout, nowhere), "feature/y")


def test_a_name_that_is_also_a_branch_with_a_vm_is_ambiguous(tmp_path: Path) -> None:
    layout = StateLayout(tmp_path / "state")
    repo = make_repo(tmp_path / "r")
    other = make_repo(tmp_path / "o")
    foreign = vm_name(str(other), "main")
    write_vm(layout, vm_config(foreign, repo=str(other)))
    git(repo, "branch", foreign)  # a branch named like the other VM
    write_vm(layout, vm_config(vm_name(str(repo), foreign), repo=str(repo), branch=foreign))
    with pytest.raises(InvalidInput, match="both a VM name and a branch"):
        targets.resolve(ctx_in(layout, repo), foreign)
