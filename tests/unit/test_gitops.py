"""gitops: which repository and branch, the one-commit workspace, and what
the source repository already has.

The command lines are pinned with fakes; the behaviour is checked against
real git in tmp_path (git is the filesystem truth here).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from agent_vm import gitops
from agent_vm.errors import GitError, InvalidInput, MissingTool
from pytest_subprocess import FakeProcess
from unit_fakes import commit, git, make_repo

# --- command lines (fakes) -----------------------------------------------------


def test_workspace_command_lines(fp: FakeProcess, tmp_path: Path) -> None:
    src = gitops.Checkout(Path("/src/repo"), "feature/x", "c" * 40, detached=False)
    d = str(tmp_path / "ws")
    expected = [
        ["git", "init", "--quiet", d],
        ["git", "-C", d, "remote", "add", "origin", "/src/repo"],
        [
            "git",
            "-C",
            d,
            "fetch",
            "--quiet",
            "--depth=1",
            "--no-tags",
            "file:///src/repo",
            f"+{'c' * 40}:refs/remotes/origin/feature/x",
        ],
        ["git", "-C", d, "update-ref", "refs/heads/feature/x", "c" * 40],
        ["git", "-C", d, "symbolic-ref", "HEAD", "refs/heads/feature/x"],
        ["git", "-C", d, "config", "branch.feature/x.remote", "origin"],
        ["git", "-C", d, "config", "branch.feature/x.merge", "refs/heads/feature/x"],
        ["git", "-C", d, "reset", "--quiet", "--hard", "c" * 40],
    ]
    for argv in expected:
        fp.register(argv)
    gitops.make_workspace(src, tmp_path / "ws")
    assert [list(c) for c in fp.calls] == expected


def test_workspace_command_lines_for_a_detached_head(fp: FakeProcess, tmp_path: Path) -> None:
    sha = "d" * 40
    src = gitops.Checkout(Path("/r"), f"detached-{sha[:12]}", sha, detached=True)
    d = str(tmp_path / "ws")
    base = f"refs/remotes/origin/detached-{sha[:12]}"
    fp.register(["git", "init", "--quiet", d])
    fp.register(["git", "-C", d, "remote", "add", "origin", "/r"])
    fp.register(
        [
            "git",
            "-C",
            d,
            "fetch",
            "--quiet",
            "--depth=1",
            "--no-tags",
            "file:///r",
            f"+{sha}:{base}",
        ]
    )
    fp.register(["git", "-C", d, "update-ref", "--no-deref", "HEAD", sha])
    fp.register(["git", "-C", d, "reset", "--quiet", "--hard", sha])
    gitops.make_workspace(src, tmp_path / "ws")
    assert len(fp.calls) == 5
    assert not any("branch." in " ".join(map(str, c)) for c in fp.calls)


def test_failed_fetch_is_a_git_error(fp: FakeProcess, tmp_path: Path) -> None:
    src = gitops.Checkout(Path("/r"), "main", "e" * 40, detached=False)
    d = str(tmp_path / "ws")
    fp.register(["git", "init", "--quiet", d])
    fp.register(["git", "-C", d, "remote", "add", "origin", "/r"])
    fp.register(["git", "-C", d, "fetch", fp.any()], returncode=128, stderr="fatal: no such\n")
    with pytest.raises(GitError) as exc:
        gitops.make_workspace(src, tmp_path / "ws")
    assert exc.value.exit_code == 10
    assert exc.value.message.startswith("could not make the workspace: 'git -C' failed")
    assert exc.value.message.endswith("fatal: no such")


def test_branch_lookup_command_lines(fp: FakeProcess) -> None:
    """A branch is looked up as a ref, after --end-of-options, never as an option."""
    fp.register(["git", "-C", "/r", "symbolic-ref", "--quiet", "HEAD"], stdout="refs/heads/main\n")
    fp.register(["git", "-C", "/r", "check-ref-format", "--branch", "dev"])
    fp.register(
        [
            "git",
            "-C",
            "/r",
            "rev-parse",
            "--verify",
            "--quiet",
            "--end-of-options",
            "refs/heads/dev^{commit}",
        ],
        returncode=1,
    )
    fp.register(
        [
            "git",
            "-C",
            "/r",
            "rev-parse",
            "--verify",
            "--quiet",
            "--end-of-options",
            "refs/remotes/origin/dev^{commit}",
        ],
        stdout="b" * 40 + "\n",
    )
    assert gitops.resolve(Path("/r"), "dev") == gitops.Checkout(
        Path("/r"), "dev", "b" * 40, detached=False
    )


def test_missing_git_is_a_missing_tool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(MissingTool) as exc:
        gitops.repo_root(tmp_path)
    assert exc.value.exit_code == 9 and "'git'" in exc.value.message


# --- repository and branch (real git) ----------------------------------------------


def test_repo_root_from_a_subdirectory(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "re po")
    (repo / "sub" / "dir").mkdir(parents=True)
    assert gitops.repo_root(repo / "sub" / "dir") == repo


def test_not_a_git_repository(tmp_path: Path) -> None:
    (tmp_path / "plain").mkdir()
    with pytest.raises(GitError) as exc:
        gitops.repo_root(tmp_path / "plain")
    assert exc.value.exit_code == 10
    assert exc.value.message == f"{tmp_path / 'plain'} is not inside a git repository"


def test_a_bare_repository_is_named_as_such(tmp_path: Path) -> None:
    bare = tmp_path / "bare.git"
    git(tmp_path, "init", "-q", "--bare", str(bare))
    with pytest.raises(GitError) as exc:
        gitops.repo_root(bare)
    assert exc.value.exit_code == 10
    assert (
        exc.value.message
        == f"{bare} is a bare repository: it has no checked-out branch to make a VM for"
    )
    assert exc.value.hint is not None and "git clone" in exc.value.hint


def test_inside_the_git_directory_is_named_as_such(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    with pytest.raises(GitError) as exc:
        gitops.repo_root(repo / ".git" / "refs")
    assert exc.value.message == f"{repo / '.git' / 'refs'} is inside a repository's .git directory"


def test_current_branch_shadowed_by_a_tag_is_the_branch(tmp_path: Path) -> None:
    """`git symbolic-ref --short` says "heads/main" when a tag is named main."""
    repo = make_repo(tmp_path / "repo")
    git(repo, "branch", "dev")
    git(repo, "tag", "dev")
    git(repo, "tag", "main")
    assert gitops.resolve(repo, None).branch == "main"
    assert gitops.branches(repo) == ["dev", "main"]
    ws = tmp_path / "ws"
    gitops.make_workspace(gitops.resolve(repo, None), ws)
    assert git(ws, "symbolic-ref", "HEAD") == "refs/heads/main"
    assert git(ws, "rev-parse", "--symbolic-full-name", "@{upstream}") == "refs/remotes/origin/main"


def test_a_branch_named_head_gets_a_workspace(tmp_path: Path) -> None:
    """refs/heads/HEAD: git's porcelain refuses the name, the refs are fine."""
    repo = make_repo(tmp_path / "repo")
    git(repo, "update-ref", "refs/heads/HEAD", "HEAD")
    git(repo, "symbolic-ref", "HEAD", "refs/heads/HEAD")
    co = gitops.resolve(repo, None)
    assert (co.branch, co.detached) == ("HEAD", False)
    ws = tmp_path / "ws"
    gitops.make_workspace(co, ws)
    assert git(ws, "symbolic-ref", "HEAD") == "refs/heads/HEAD"
    assert git(ws, "config", "branch.HEAD.merge") == "refs/heads/HEAD"
    assert git(ws, "rev-parse", "refs/heads/HEAD") == co.commit
    assert (ws / "README").read_text() == "hello\n"


def test_current_named_and_remote_branches(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    first = git(repo, "rev-parse", "HEAD")
    git(repo, "checkout", "-q", "-b", "feature/x")
    second = commit(repo, "f")
    assert gitops.resolve(repo, None) == gitops.Checkout(repo, "feature/x", second, False, True)
    assert gitops.resolve(repo, "feature/x").current
    assert gitops.resolve(repo, "main") == gitops.Checkout(repo, "main", first, False)
    # A branch that exists only as origin/<name> (e.g. in a fresh clone).
    git(repo, "update-ref", "refs/remotes/origin/only-remote", first)
    assert gitops.resolve(repo, "only-remote").commit == first


def test_detached_head_gets_a_name_of_its_own(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    sha = git(repo, "rev-parse", "HEAD")
    git(repo, "checkout", "-q", "--detach")
    co = gitops.resolve(repo, None)
    assert co == gitops.Checkout(repo, f"detached-{sha[:12]}", sha, detached=True, current=True)


def test_unknown_branch(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    with pytest.raises(GitError) as exc:
        gitops.resolve(repo, "nope")
    assert exc.value.message == f"unknown branch 'nope' in {repo}"
    assert exc.value.hint is not None and "git branch" in exc.value.hint


def test_a_tag_is_not_a_branch(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    git(repo, "tag", "v1")
    with pytest.raises(GitError, match="unknown branch 'v1'"):
        gitops.resolve(repo, "v1")


@pytest.mark.parametrize("bad", ["a..b", "-rf", "--upload-pack=touch x", "x y", "a~1", "foo.lock"])
def test_invalid_branch_names_are_invalid_input(tmp_path: Path, bad: str) -> None:
    repo = make_repo(tmp_path / "repo")
    with pytest.raises(InvalidInput) as exc:
        gitops.resolve(repo, bad)
    assert exc.value.exit_code == 2 and repr(bad) in exc.value.message


def test_repository_without_commits(tmp_path: Path) -> None:
    repo = tmp_path / "empty"
    repo.mkdir()
    git(repo, "init", "-q")
    with pytest.raises(GitError, match="has no commits yet"):
        gitops.resolve(repo, None)


def test_branches_lists_local_branches(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    git(repo, "branch", "feature/x")
    assert gitops.branches(repo) == ["feature/x", "main"]
    assert gitops.branches(tmp_path / "nowhere") == []


# --- the workspace (real git) ------------------------------------------------------


def test_workspace_is_a_one_commit_clone_with_origin(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    for i in range(3):
        commit(repo, f"f{i}")
    git(repo, "checkout", "-q", "-b", "feature/x")
    tip = commit(repo, "feature")
    ws = tmp_path / "ws"
    gitops.make_workspace(gitops.resolve(repo, "feature/x"), ws)
    assert git(ws, "rev-parse", "HEAD") == tip
    assert git(ws, "rev-parse", "--abbrev-ref", "HEAD") == "feature/x"
    assert git(ws, "rev-list", "--count", "HEAD") == "1"  # history is not copied
    assert git(ws, "remote", "get-url", "origin") == str(repo)
    assert git(ws, "rev-parse", "--abbrev-ref", "@{upstream}") == "origin/feature/x"
    assert (ws / "feature").read_text() == "x\n"
    # Self-contained: no alternates pointing into the host repository.
    assert not (ws / ".git" / "objects" / "info" / "alternates").exists()
    assert (ws / ".git").is_dir()


def test_workspace_of_a_detached_head(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    sha = commit(repo, "b")
    git(repo, "checkout", "-q", "--detach", "HEAD~1")
    co = gitops.resolve(repo, None)
    ws = tmp_path / "ws"
    gitops.make_workspace(co, ws)
    assert git(ws, "rev-parse", "HEAD") == git(repo, "rev-parse", "HEAD") != sha
    assert git(ws, "rev-parse", "--abbrev-ref", "HEAD") == "HEAD"


def test_workspace_of_a_shell_looking_branch_name(tmp_path: Path) -> None:
    """$( ) and quotes are legal in git branch names; nothing may run them."""
    repo = make_repo(tmp_path / "repo")
    name = "x$(touch${IFS}pwned);'\"`id`"
    git(repo, "branch", name)
    ws = tmp_path / "ws"
    gitops.make_workspace(gitops.resolve(repo, name), ws)
    assert git(ws, "rev-parse", "--abbrev-ref", "HEAD") == name
    assert not list(tmp_path.rglob("pwned"))


@pytest.mark.parametrize(
    "dirname", ["with space", "p%41q", "%2F%", "hash#x", "query?y", "ünï-ç☃", "-leading-dash"]
)
def test_workspace_from_a_path_a_url_would_change(tmp_path: Path, dirname: str) -> None:
    """The fetch names the source by a file:// URL, which git percent-decodes:
    `%41` reached git as `A`, another directory."""
    repo = make_repo(tmp_path / dirname)
    (tmp_path / "pAq").mkdir()  # where an undecoded p%41q would lead
    ws = tmp_path / "ws"
    gitops.make_workspace(gitops.resolve(gitops.repo_root(repo), None), ws)
    assert git(ws, "rev-parse", "HEAD") == git(repo, "rev-parse", "HEAD")
    assert (ws / "README").read_text() == "hello\n"
    assert git(ws, "remote", "get-url", "origin") == str(repo)


def test_file_url_escapes_what_git_would_decode() -> None:
    assert gitops.file_url(Path("/a b/p%41q#x?y")) == "file:///a%20b/p%2541q%23x%3Fy"
    assert gitops.file_url(Path("/ü")) == "file:///%C3%BC"


def test_workspace_into_an_existing_non_empty_dir_fails_cleanly(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    ws = make_repo(tmp_path / "ws")  # already a repository with another origin-less history
    git(ws, "remote", "add", "origin", "/elsewhere")
    with pytest.raises(GitError, match="could not make the workspace"):
        gitops.make_workspace(gitops.resolve(repo, "main"), ws)


# --- what a workspace lacks (real git) ----------------------------------------------


def test_uncommitted_changes_of_the_current_branch_are_left_out(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    (repo / "README").write_text("changed\n")
    (repo / "new").write_text("new\n")
    git(repo, "branch", "other")
    assert gitops.left_out(gitops.resolve(repo, None)) == ([" M README", "?? new"], [])
    assert gitops.left_out(gitops.resolve(repo, "main"))[0] == [" M README", "?? new"]
    # Another branch never had them.
    assert gitops.left_out(gitops.resolve(repo, "other")) == ([], [])


def test_submodules_are_left_out(tmp_path: Path) -> None:
    sub = make_repo(tmp_path / "sub")
    repo = make_repo(tmp_path / "repo")
    git(repo, "-c", "protocol.file.allow=always", "submodule", "add", "-q", str(sub), "lib/sub")
    git(repo, "commit", "-q", "-m", "submodule")
    assert gitops.left_out(gitops.resolve(repo, None)) == ([], ["lib/sub"])


def test_a_clean_checkout_leaves_nothing_out(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    assert gitops.left_out(gitops.resolve(repo, None)) == ([], [])
