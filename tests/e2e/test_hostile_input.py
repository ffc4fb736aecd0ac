"""Hostile and odd input: safe names or clear errors, never a traceback,
never a file outside the state dir, never a shell (issue: hardening)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from harness import Cli, git

ODD_BRANCHES = [
    "feature/x",
    "fé/ünï-çødé",
    "quote'and\"double",
    "$(touch${IFS}PWNED)",
    "`touch${IFS}PWNED2`",
    "a;b|c&d",
    "dots.in.name",
    "/".join(["long" * 16] * 5),  # > 255 characters in all
]


def test_odd_branch_names_give_safe_unique_names(cli: Cli, repo: Path, tmp_path: Path) -> None:
    names = set()
    for branch in ODD_BRANCHES:
        git(repo, "branch", branch)
        r = cli("create", "--branch", branch, "--json", cwd=repo)
        vm = r.json()
        assert vm["branch"] == branch
        name = vm["name"]
        assert name.replace("-", "").isalnum() and name.islower() and len(name) <= 63
        names.add(name)
        assert Path(vm["workspace"]).is_relative_to(cli.state_dir)
    assert len(names) == len(ODD_BRANCHES)
    assert not list(tmp_path.rglob("PWNED*")) and not Path("PWNED").exists()
    listed = cli("list", "--json", cwd=repo).json()["vms"]
    assert sorted(v["branch"] for v in listed) == sorted(ODD_BRANCHES)
    for branch in ODD_BRANCHES:
        cli("destroy", branch, cwd=repo)


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (["create", "--port", "70000"], 2, "between 1024 and 65535"),
        (["create", "--port", "80"], 2, "between 1024 and 65535"),
        (["create", "--memory", "12"], 2, "memory"),
        (["create", "--cores", "0"], 2, "cores"),
        (["create", "--cores", "many"], 2, "whole number"),
        (["create", "--host", "not-an-ip"], 2, "not an IP address"),
        (["create", "--branch=-rf"], 2, "not a valid branch name"),
        (["create", "--branch", "a..b"], 2, "not a valid branch name"),
        (["create", "--branch", "with space"], 2, "not a valid branch name"),
        (["create", "--branch", "no-such-branch"], 10, "unknown branch"),
        (["create", "--config", "/nonexistent.nix"], 2, "is not a file"),
        (["status", "nothing-here"], 3, "no VM"),
        (["stop"], 3, "no VM"),
    ],
)
def test_bad_input_is_one_clear_line(
    cli: Cli, repo: Path, args: list[str], code: int, words: str
) -> None:
    r = cli(*args, cwd=repo, check=False)
    assert r.returncode == code, r.stderr
    assert words in r.stderr
    assert "Traceback" not in r.stderr
    assert len([line for line in r.stderr.splitlines() if line.strip()]) <= 6


def test_outside_a_git_repository(cli: Cli, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    r = cli("create", cwd=empty, check=False)
    assert r.returncode == 10 and "not inside a git repository" in r.stderr


@pytest.mark.parametrize("tool", ["git", "ssh-keygen", "nix"])
def test_missing_tools(cli: Cli, repo: Path, tmp_path: Path, tool: str) -> None:
    # A PATH with every tool but one, via symlinks to the real programs.
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for name in (
        "git",
        "ssh-keygen",
        "ssh",
        "nix",
        "qemu-img",
        "qemu-system-x86_64",
        "agent-vm",
        "python3",
    ):
        real = next(
            (Path(d) / name for d in os.environ["PATH"].split(":") if (Path(d) / name).exists()),
            None,
        )
        if real is not None and name != tool:
            (bindir / name).symlink_to(real)
    cli.env["PATH"] = str(bindir)
    if tool == "nix":
        cli("create", cwd=repo)
        r = cli("start", cwd=repo, check=False)
    else:
        r = cli("create", cwd=repo, check=False)
    assert r.returncode == 9, r.stderr
    assert f"'{tool}' was not found" in r.stderr and "install" in r.stderr
    assert "Traceback" not in r.stderr
