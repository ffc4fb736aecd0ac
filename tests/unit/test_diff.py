"""diff: the agent's commits, uncommitted and untracked files, as a patch or
a stat; guest-written names and text escaped unless --raw to a pipe."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from agent_vm import cli, diff
from agent_vm.errors import GitError
from unit_fakes import Box, commit, git, run_cli, workspace_vm

ESC_SUBJECT = "fix \x1b]0;owned\x07 \x1b[2Jthings"
ODD_NAME = "odd\x1b[31mname"


@pytest.fixture
def box(tmp_path: Path) -> Box:
    b = workspace_vm(tmp_path)
    (b.ws / "gone").write_text("to delete\n")
    git(b.ws, "add", "gone")
    git(b.ws, "commit", "-q", "-m", ESC_SUBJECT)
    (b.ws / "README").write_text("hello\r\nagent \x1b[1mbold\r\n")
    (b.ws / "gone").unlink()
    (b.ws / ODD_NAME).write_text("x\n")
    (b.ws / "bin").write_bytes(b"\0\1\2")
    (b.ws / ".gitignore").write_text("*.o\n")
    (b.ws / "skip.o").write_text("ignored\n")
    return b


def test_the_report(box: Box) -> None:
    rep, patch = diff.report(box.layout, box.vm, box.cfg)
    assert rep.base == box.cfg.commit and rep.head_ref == "refs/heads/main"
    assert rep.head == git(box.ws, "rev-parse", "HEAD")
    assert [c.subject for c in rep.commits] == [ESC_SUBJECT]
    assert sorted((f.status, f.path) for f in rep.uncommitted) == [
        ("A", ".gitignore"),
        ("A", "bin"),
        ("A", ODD_NAME),
        ("D", "gone"),
        ("M", "README"),
    ]
    # From the base: the committed-then-deleted file is no change at all.
    files = {f.path: f for f in rep.files}
    assert sorted(files) == [".gitignore", "README", "bin", ODD_NAME]
    assert (files["README"].insertions, files["README"].deletions) == (2, 1)
    assert files["bin"].insertions is None
    # The patch is git's bytes, unchanged.
    assert b"+agent \x1b[1mbold\r\n" in patch
    assert b'diff --git "a/odd\\033[31mname"' in patch
    assert b"skip.o" not in patch


def test_the_terminal_sees_escapes_only(capsys: pytest.CaptureFixture[str], box: Box) -> None:
    res = run_cli(capsys, "--state-dir", str(box.layout.root), "diff", box.vm.name)
    assert res.code == 0, res.err
    assert "\x1b" not in res.out and "\x07" not in res.out and "\r" not in res.out
    lines = res.out.splitlines()
    assert (
        lines[0] == f"VM main-0123abcd (branch main): the agent's work since {box.cfg.commit[:12]}"
    )
    assert lines[3].endswith(" fix \\x1b]0;owned\\x07 \\x1b[2Jthings")
    assert "  A odd\\x1b[31mname" in lines
    assert "+agent \\x1b[1mbold\\x0d" in lines


def test_raw_gives_the_bytes_to_a_pipe(
    capsysbinary: pytest.CaptureFixture[bytes], box: Box
) -> None:
    assert cli.main(["--state-dir", str(box.layout.root), "diff", "--raw", box.vm.name]) == 0
    out = capsysbinary.readouterr().out
    assert b"+agent \x1b[1mbold\r\n" in out
    # The summary above the patch stays escaped: git apply skips it.
    assert b"\\x1b]0;owned" in out


def test_stat_and_json(capsys: pytest.CaptureFixture[str], box: Box) -> None:
    res = run_cli(capsys, "--state-dir", str(box.layout.root), "diff", "--stat", box.vm.name)
    assert res.code == 0
    assert " 4 files changed" in res.out and "diff --git" not in res.out
    res = run_cli(capsys, "--state-dir", str(box.layout.root), "diff", "--json", box.vm.name)
    assert "\x1b" not in res.out  # JSON escapes it as \u001b
    data = json.loads(res.out)
    rep = diff.DiffReport.model_validate(data)
    assert rep.commits[0].subject == ESC_SUBJECT
    assert rep.patch is not None and "+agent \x1b[1mbold\r\n" in rep.patch
    args = ["--state-dir", str(box.layout.root), "diff", "--json", "--stat", box.vm.name]
    assert json.loads(run_cli(capsys, *args).out)["patch"] is None
    schema = json.loads(run_cli(capsys, "schema", "diff").out)
    assert schema["title"] == "DiffReport" and "commits" in schema["properties"]


def test_a_clean_workspace(tmp_path: Path) -> None:
    b = workspace_vm(tmp_path)
    rep, patch = diff.report(b.layout, b.vm, b.cfg)
    assert (rep.commits, rep.uncommitted, rep.files, patch) == ([], [], [], b"")


def test_a_workspace_without_its_base(tmp_path: Path) -> None:
    b = workspace_vm(tmp_path)
    commit(b.ws, "next")
    base = b.cfg.commit
    (b.ws / ".git" / "objects" / base[:2] / base[2:]).unlink()
    with pytest.raises(GitError, match="no longer has its base commit"):
        diff.report(b.layout, b.vm, b.cfg)
