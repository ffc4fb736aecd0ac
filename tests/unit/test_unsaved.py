"""unsaved: every reason destroy refuses, each with real git; work that the
source repository reaches (pushed there, or pulled) is not a reason."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from agent_vm import lifecycle, pull, state, unsaved
from agent_vm.context import Context
from agent_vm.errors import UnsavedWork
from unit_fakes import Box, commit, git, workspace_vm


@pytest.fixture
def box(tmp_path: Path) -> Box:
    b = workspace_vm(tmp_path)
    assert reasons(b) == []  # a fresh workspace has nothing to lose
    return b


def reasons(box: Box) -> list[str]:
    return unsaved.unsaved_work(box.layout, box.vm, box.cfg)


def test_a_modified_file(box: Box) -> None:
    (box.ws / "README").write_text("changed\n")
    assert reasons(box) == ["uncommitted changes to 1 file(s)"]


def test_untracked_files_but_not_ignored_ones(box: Box) -> None:
    (box.ws / "new").write_text("new\n")
    (box.ws / "dir").mkdir()
    (box.ws / "dir" / "also-new").write_text("new\n")
    (box.ws / ".gitignore").write_text("*.log\n")
    (box.ws / "build.log").write_text("ignored\n")
    assert reasons(box) == ["uncommitted changes to 3 file(s)"]  # .gitignore is new too


def test_a_deleted_file(box: Box) -> None:
    (box.ws / "README").unlink()
    assert reasons(box) == ["uncommitted changes to 1 file(s)"]


def test_a_staged_file(box: Box) -> None:
    (box.ws / "staged").write_text("s\n")
    git(box.ws, "add", "staged")
    assert reasons(box) == ["uncommitted changes to 1 file(s)"]


def test_commits_on_branches(box: Box) -> None:
    commit(box.ws, "a")
    commit(box.ws, "b")
    git(box.ws, "checkout", "-q", "-b", "side")
    commit(box.ws, "side")
    git(box.ws, "checkout", "-q", "main")
    assert reasons(box) == ["3 commit(s) on branch(es) main, side that exist nowhere else"]


def test_commits_on_a_detached_head(box: Box) -> None:
    git(box.ws, "checkout", "-q", "--detach")
    commit(box.ws, "detached")
    assert reasons(box) == ["1 commit(s) on a detached HEAD"]


def test_commits_reachable_only_from_a_tag(box: Box) -> None:
    commit(box.ws, "tagged")
    git(box.ws, "tag", "-a", "-m", "t", "v1")
    git(box.ws, "reset", "-q", "--hard", "HEAD~1")
    assert reasons(box) == ["1 commit(s) reachable only from tags"]


def test_commits_reachable_only_from_the_reflog(box: Box) -> None:
    commit(box.ws, "dropped")
    git(box.ws, "reset", "-q", "--hard", "HEAD~1")
    assert reasons(box) == ["1 commit(s) reachable only from the reflog"]


def test_an_amended_commit_is_in_the_reflog(box: Box) -> None:
    commit(box.ws, "first")
    git(box.ws, "commit", "-q", "--amend", "-m", "amended")
    assert reasons(box) == [
        "1 commit(s) on branch(es) main that exist nowhere else",
        "1 commit(s) reachable only from the reflog",
    ]


def test_the_stash(box: Box) -> None:
    (box.ws / "README").write_text("wip\n")
    git(box.ws, "stash", "-q")
    assert reasons(box) == ["2 commit(s) in the stash"]


def test_other_refs(box: Box) -> None:
    sha = commit(box.ws, "x")
    git(box.ws, "reset", "-q", "--hard", "HEAD~1")
    git(box.ws, "reflog", "expire", "--expire=now", "--all")
    git(box.ws, "update-ref", "refs/remotes/origin/main", sha)
    assert reasons(box) == ["1 commit(s) reachable only from other refs"]


def test_a_linked_worktree(box: Box, tmp_path: Path) -> None:
    git(box.ws, "worktree", "add", "-q", "--detach", str(tmp_path / "wt"))
    commit(tmp_path / "wt", "in-wt")
    assert reasons(box) == [
        "1 commit(s) checked out in linked worktrees",
        "1 linked worktree(s) whose files are not checked",
    ]


def test_everything_at_once_in_one_line(box: Box, tmp_path: Path) -> None:
    (box.ws / "README").write_text("wip\n")
    git(box.ws, "stash", "-q")
    commit(box.ws, "c")
    (box.ws / "untracked").write_text("u\n")
    ctx = Context(layout=box.layout, cwd=box.repo)
    with pytest.raises(UnsavedWork) as exc:
        lifecycle.destroy(ctx, box.vm)
    assert exc.value.exit_code == 13
    assert exc.value.message == (
        "VM main-0123abcd's workspace has 1 commit(s) on branch(es) main that exist nowhere "
        "else; 2 commit(s) in the stash; uncommitted changes to 1 file(s)"
    )
    assert exc.value.hint is not None and "agent-vm pull main-0123abcd" in exc.value.hint
    assert box.vm.dir.exists()


# --- what exists elsewhere ------------------------------------------------------------


def test_commits_the_source_repository_has(box: Box) -> None:
    commit(box.ws, "pushed")
    # The test's own git, standing in for a user who fetched the branch.
    git(box.repo, "fetch", "-q", str(box.ws), "main:from-vm")
    assert reasons(box) == []


def test_a_source_commit_handed_to_the_workspace_is_not_its_work(box: Box) -> None:
    newer = commit(box.repo, "upstream")
    git(box.ws, "fetch", "-q", str(box.repo), "main:refs/remotes/origin/main")
    git(box.ws, "merge", "-q", "--ff-only", newer)
    assert reasons(box) == []


def test_after_a_pull_nothing_is_lost(box: Box) -> None:
    commit(box.ws, "agent")
    (box.ws / "README").write_text("wip\n")
    pull.pull(box.layout, box.vm, box.cfg)
    assert reasons(box) == ["uncommitted changes to 1 file(s)"]
    pull.pull(box.layout, box.vm, box.cfg, include_uncommitted=True)
    assert reasons(box) == []
    (box.ws / "README").write_text("more\n")  # a state no pull captured
    assert reasons(box) == ["uncommitted changes to 1 file(s)"]


def test_a_pulled_branch_the_user_deleted_is_not_elsewhere(box: Box) -> None:
    commit(box.ws, "agent")
    pull.pull(box.layout, box.vm, box.cfg)
    git(box.repo, "branch", "-q", "-D", "agent/main")
    assert reasons(box) == ["1 commit(s) on branch(es) main that exist nowhere else"]


def test_a_source_repository_that_is_gone(box: Box) -> None:
    commit(box.ws, "agent")
    shutil.rmtree(box.repo)
    assert reasons(box) == ["1 commit(s) on branch(es) main that exist nowhere else"]


# --- what cannot be verified is a refusal -------------------------------------------------


@pytest.mark.parametrize(
    ("damage", "why"),
    [
        (lambda ws: shutil.rmtree(ws / ".git"), ".git: is missing"),
        (lambda ws: (ws / ".git" / "HEAD").write_text("garbage\n"), ".git/HEAD is malformed"),
        (lambda ws: (ws / ".git" / "HEAD").unlink(), ".git/HEAD: is missing"),
        (lambda ws: shutil.rmtree(ws / ".git" / "objects"), ".git/objects: is missing"),
        (lambda ws: os.mkfifo(_emptied(ws / ".git")), ".git: is not a directory"),
    ],
)
def test_a_workspace_that_cannot_be_read(box: Box, damage: object, why: str) -> None:
    damage(box.ws)  # type: ignore[operator]
    (reason,) = reasons(box)
    assert reason.startswith("a repository that cannot be verified (") and why in reason, reason


def _emptied(path: Path) -> Path:
    shutil.rmtree(path)
    return path


def test_missing_objects(box: Box) -> None:
    sha = commit(box.ws, "a")
    obj = box.ws / ".git" / "objects" / sha[:2] / sha[2:]
    obj.unlink()
    assert reasons(box) == ["1 object(s) its refs or reflogs name that are missing (cannot verify)"]


def test_destroy_checks_again_after_the_vm_stops(box: Box, monkeypatch: pytest.MonkeyPatch) -> None:
    """A running guest can write until it is stopped: the check before the
    stop cannot be the last word."""
    ctx = Context(layout=box.layout, cwd=box.repo)
    monkeypatch.setattr(state, "alive", lambda rt, d: True)

    def stop(*_: object) -> None:
        commit(box.ws, "written-while-stopping")

    monkeypatch.setattr(lifecycle, "_stop_locked", stop)
    with pytest.raises(UnsavedWork, match="1 commit"):
        lifecycle.destroy(ctx, box.vm)
    assert box.vm.dir.exists()
