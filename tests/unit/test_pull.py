"""pull: the agent's commits become agent/<branch> in the source repository;
the user's checkout (HEAD, index, working tree, stash) never changes."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from agent_vm import pull, store
from agent_vm.errors import GitError, InvalidInput
from agent_vm.models import PullLog
from unit_fakes import Box, commit, git, run_cli, tree_state, workspace_vm


@pytest.fixture
def box(tmp_path: Path) -> Box:
    return workspace_vm(tmp_path)


def checkout_state(repo: Path) -> dict[str, object]:
    """Everything of the user's checkout that pull must not touch."""
    dot = repo / ".git"
    return {
        "HEAD": (dot / "HEAD").read_bytes(),
        "index": (dot / "index").read_bytes(),
        "worktree": {k: v for k, v in tree_state(repo).items() if not k.startswith(".git")},
        "stash": git(repo, "stash", "list"),
        "branch": git(repo, "symbolic-ref", "HEAD"),
        "FETCH_HEAD": (dot / "FETCH_HEAD").exists(),
        "main": git(repo, "rev-parse", "main"),
    }


def test_pull_makes_agent_branch_and_touches_nothing_else(box: Box) -> None:
    (box.repo / "user-wip").write_text("the user's own, uncommitted\n")
    (box.repo / "README").write_text("edited by the user\n")
    git(box.repo, "add", "README")
    (box.repo / "stashed").write_text("s\n")
    git(box.repo, "stash", "-q", "-u")
    before = checkout_state(box.repo)
    first = commit(box.ws, "one")
    second = commit(box.ws, "two")
    res = pull.pull(box.layout, box.vm, box.cfg)
    assert (res.ref, res.commit, res.old, res.commits) == ("refs/heads/agent/main", second, None, 2)
    assert git(box.repo, "rev-parse", "agent/main") == second
    assert git(box.repo, "rev-parse", "agent/main~1") == first
    assert checkout_state(box.repo) == before
    log = store.load(box.vm.pulls, PullLog).pulls
    assert [(p.ref, p.commit, p.head, p.worktree_tree) for p in log] == [
        ("refs/heads/agent/main", second, second, None)
    ]
    # Again with nothing new: nothing changes.
    again = pull.pull(box.layout, box.vm, box.cfg)
    assert (again.commit, again.old, again.commits) == (second, second, 0)
    # The agent goes on: a fast-forward.
    third = commit(box.ws, "three")
    res = pull.pull(box.layout, box.vm, box.cfg)
    assert (res.old, res.commit, res.commits) == (second, third, 1)
    assert checkout_state(box.repo) == before


def test_nothing_to_pull(box: Box) -> None:
    res = pull.pull(box.layout, box.vm, box.cfg)
    assert res.commit is None and res.left_uncommitted == 0
    assert git(box.repo, "branch", "--list", "agent/*") == ""
    (box.ws / "new").write_text("x\n")
    res = pull.pull(box.layout, box.vm, box.cfg)
    assert res.commit is None and res.left_uncommitted == 1


def test_uncommitted_files_are_committed_only_when_asked(box: Box) -> None:
    head = commit(box.ws, "done")
    (box.ws / "README").write_text("edited\n")
    (box.ws / "new.txt").write_text("new\n")
    res = pull.pull(box.layout, box.vm, box.cfg)
    assert (res.commit, res.left_uncommitted, res.snapshot) == (head, 2, None)
    res = pull.pull(box.layout, box.vm, box.cfg, include_uncommitted=True)
    assert res.snapshot is not None and res.commit == res.snapshot and res.left_uncommitted == 0
    time.sleep(1.1)  # a new commit of the same files would get another id
    again = pull.pull(box.layout, box.vm, box.cfg, include_uncommitted=True)
    assert (again.commit, again.old, again.commits) == (res.commit, res.commit, 0)
    tip = "agent/main"
    assert git(box.repo, "rev-parse", f"{tip}~1") == head
    assert git(box.repo, "log", "-1", "--format=%an <%ae>|%cn", tip) == (
        "agent-vm <agent-vm@localhost>|agent-vm"
    )
    assert git(box.repo, "show", f"{tip}:new.txt") == "new"
    assert git(box.repo, "show", f"{tip}:README") == "edited"
    # The workspace itself is left as it was.
    assert git(box.ws, "rev-parse", "HEAD") == head
    assert (box.ws / "new.txt").exists()
    # The agent commits on: its history does not contain the snapshot.
    git(box.ws, "add", "-A")
    git(box.ws, "commit", "-q", "-m", "agent commits it")
    with pytest.raises(GitError) as exc:
        pull.pull(box.layout, box.vm, box.cfg)
    assert exc.value.hint is not None and "earlier --include-uncommitted" in exc.value.hint
    assert pull.pull(box.layout, box.vm, box.cfg, force=True).commits == 1


def test_a_non_fast_forward_is_refused_without_force(box: Box) -> None:
    commit(box.ws, "agent")
    git(box.repo, "branch", "agent/main", "main")
    git(box.repo, "checkout", "-q", "agent/main")
    user = commit(box.repo, "the user's own")
    git(box.repo, "checkout", "-q", "main")
    with pytest.raises(GitError) as exc:
        pull.pull(box.layout, box.vm, box.cfg)
    assert "not a fast-forward" in exc.value.message and "--force" in (exc.value.hint or "")
    assert git(box.repo, "rev-parse", "agent/main") == user
    assert not box.vm.pulls.exists()
    res = pull.pull(box.layout, box.vm, box.cfg, force=True)
    assert git(box.repo, "rev-parse", "agent/main") == res.commit != user


def test_the_checked_out_branch_is_refused(box: Box, tmp_path: Path) -> None:
    commit(box.ws, "agent")
    before = checkout_state(box.repo)
    with pytest.raises(GitError, match="refusing to update main: it is checked out in"):
        pull.pull(box.layout, box.vm, box.cfg, into="main")
    git(box.repo, "worktree", "add", "-q", "-b", "other", str(tmp_path / "linked"))
    with pytest.raises(GitError, match=r"refusing to update other: it is checked out in .*linked"):
        pull.pull(box.layout, box.vm, box.cfg, into="refs/heads/other")
    assert checkout_state(box.repo) == before


def test_into_another_branch(box: Box) -> None:
    sha = commit(box.ws, "agent")
    res = pull.pull(box.layout, box.vm, box.cfg, into="review/agent-1")
    assert res.ref == "refs/heads/review/agent-1"
    assert git(box.repo, "rev-parse", "review/agent-1") == sha


@pytest.mark.parametrize(
    ("into", "words"),
    [
        ("refs/tags/v1", "only a branch"),
        ("a..b", "not a valid branch name"),
        ("-rf", "not a valid branch name"),
        ("with space", "not a valid branch name"),
    ],
)
def test_bad_into(box: Box, into: str, words: str) -> None:
    commit(box.ws, "agent")
    with pytest.raises(InvalidInput, match=words):
        pull.pull(box.layout, box.vm, box.cfg, into=into)


def test_pull_on_the_command_line(capsys: pytest.CaptureFixture[str], box: Box) -> None:
    commit(box.ws, "agent")
    (box.ws / "left").write_text("x\n")
    res = run_cli(capsys, "--state-dir", str(box.layout.root), "pull", box.vm.name)
    assert res.code == 0, res.err
    assert res.out.startswith("pulled 1 commit(s) into agent/main (new branch at ")
    assert "review: git log -p agent/main" in res.out
    assert "the agent left 1 file(s) uncommitted; they were not pulled" in res.err
    assert "--include-uncommitted" in res.err
    args = ["--state-dir", str(box.layout.root), "pull", box.vm.name, "--include-uncommitted"]
    res = run_cli(capsys, *args)
    assert "the files not committed in the workspace are commit" in res.out and res.err == ""
    res = run_cli(capsys, *args)
    assert res.out.startswith("agent/main is already at ")
    log = json.loads(box.vm.pulls.read_text())
    assert len(log["pulls"]) == 2
