"""push: the source branch's newer commits reach the workspace as
origin/<branch> through a bundle the guest's own git fetches; the host
never runs git in the workspace."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from agent_vm import push
from agent_vm.errors import CommandFailed, GitError
from plumbum import local
from unit_fakes import LAUNCHES, Box, commit, git, run_cli, workspace_vm, write_fake_tool

# Stands in for ssh into the guest: runs the remote command here, with the
# bundle on its stdin, and keeps the arguments ssh was given.
FAKE_SSH = """
printf '%s\\n' "$@" >"$(dirname "$0")/ssh-args"
for last; do :; done
exec sh -c "$last"
"""


@pytest.fixture
def box(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Box]:
    b = workspace_vm(tmp_path)
    # The guest's /workspace is the workspace directory here.
    monkeypatch.setattr(push, "GUEST_WORKSPACE", str(b.ws))
    bindir = tmp_path / "bin"
    write_fake_tool(bindir, "ssh", FAKE_SSH)
    with local.env(PATH=f"{bindir}:{os.environ['PATH']}"):
        yield b


def test_push_hands_newer_commits_over_as_origin_branch(box: Box, tmp_path: Path) -> None:
    newer = commit(box.repo, "upstream")
    LAUNCHES.clear()
    res = push.push(box.vm, box.cfg, 2222)
    assert (res.branch, res.commit, res.sent) == ("main", newer, True)
    assert git(box.ws, "rev-parse", "refs/remotes/origin/main") == newer
    assert git(box.ws, "rev-parse", "HEAD") == box.cfg.commit  # the agent decides when to merge
    assert not (box.vm.dir / "push.bundle").exists()
    args = (tmp_path / "bin" / "ssh-args").read_text().splitlines()
    assert args[:2] == ["-F", "none"] and "BatchMode=yes" in args and "-T" in args
    assert args[-1].startswith("sh -c 'set -e;") and args[-1].endswith(" agent-vm-push main")
    # On the host git ran only in the source repository; the rest was ssh.
    for launch in LAUNCHES:
        assert launch.argv[:3] == ["git", "-C", str(box.repo)] or launch.argv[0] == "ssh"
    bundle = [x.argv for x in LAUNCHES if "bundle" in x.argv]
    assert bundle[0][3:6] == ["bundle", "create", "--quiet"]
    assert bundle[0][-2:] == ["refs/heads/main", f"^{box.cfg.commit}"]


def test_nothing_new_to_push(box: Box, tmp_path: Path) -> None:
    res = push.push(box.vm, box.cfg, 2222)
    assert res.sent is False and res.commit == box.cfg.commit
    assert not (tmp_path / "bin" / "ssh-args").exists()


def test_the_guest_failing_is_one_line(box: Box) -> None:
    commit(box.repo, "upstream")
    (box.ws / ".git" / "HEAD").write_text("broken\n")
    with pytest.raises(CommandFailed) as exc:
        push.push(box.vm, box.cfg, 2222)
    assert exc.value.message.startswith("the guest could not fetch main: ")
    assert not (box.vm.dir / "push.bundle").exists()


def test_a_branch_the_source_does_not_have(box: Box) -> None:
    cfg = box.cfg.model_copy(update={"branch": "detached-0123456789ab"})
    with pytest.raises(GitError, match="has no branch 'detached-0123456789ab'"):
        push.push(box.vm, cfg, 2222)


def test_push_needs_a_running_vm(capsys: pytest.CaptureFixture[str], box: Box) -> None:
    res = run_cli(capsys, "--state-dir", str(box.layout.root), "push", box.vm.name)
    assert res.code == 6 and "is stopped" in res.err
