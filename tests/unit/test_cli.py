"""cli: bad input is one line on stderr (maybe a hint) with the documented
exit code and never a traceback; completion offers the VM names.

Most cases run `cli.main` in this process; a few run `python -m agent_vm`
as a real process (the console entry, a PATH without the tools)."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from agent_vm import cli, commands, store
from agent_vm.models import VmState
from agent_vm.paths import StateLayout
from plumbum import local
from unit_fakes import (
    ROOT,
    SRC,
    CliResult,
    git,
    make_repo,
    run_cli,
    run_module,
    vm_config,
    write_vm,
)

README = ROOT / "README.md"


def assert_error(res: CliResult, code: int, *words: str) -> None:
    """Exit `code`; stderr is `agent-vm: error: …` and at most a hint line."""
    assert res.code == code, (res.code, res.err)
    assert "Traceback" not in res.err and "Traceback" not in res.out
    lines = res.err.rstrip("\n").split("\n")
    assert lines[0].startswith("agent-vm: error: "), res.err
    assert len(lines) <= 2, res.err
    if len(lines) == 2:
        assert lines[1].startswith("agent-vm: hint: "), res.err
    for w in words:
        assert w in res.err, (w, res.err)


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    repo = make_repo(tmp_path / "repo")
    monkeypatch.chdir(repo)
    return repo


@pytest.fixture
def plain_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "plain"
    d.mkdir()
    monkeypatch.chdir(d)
    return d


# --- bad input ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["create", "--port", "70000"], ["create: argument --port", "between 1024 and 65535"]),
        (["create", "--port", "80"], ["between 1024 and 65535, not 80"]),
        (["create", "--ssh-port", "abc"], ["whole number, not 'abc'"]),
        (["create", "--memory", "0"], ["argument --memory: must be between 256"]),
        (["create", "--cores", "0"], ["argument --cores: must be between 1 and 256, not 0"]),
        (["create", "--cores", "x"], ["whole number"]),
        (["create", "--disk-size", "1"], ["argument --disk-size: must be between 512"]),
        (["create", "--network", "bridge"], ["invalid choice: 'bridge'"]),
        (["up", "--memory", "-5"], ["memory"]),
        (["update", "--cores", "1000"], ["cores"]),
        (["update", "--port", "65536"], ["port"]),
        (["--timeout", "0", "status"], ["must be positive"]),
        (["--timeout", "soon", "status"], ["not a number"]),
        (["stop", "--grace", "-1"], ["must be positive"]),
        (["frobnicate"], ["invalid choice: 'frobnicate'"]),
        ([], ["required: COMMAND"]),
        (["--log-format", "xml", "list"], ["invalid choice: 'xml'"]),
        (["schema", "nope"], ["invalid choice"]),
        (["pull", "--into"], ["expected one argument"]),
        (["diff", "--patch"], ["unrecognized arguments: --patch"]),
    ],
)
def test_usage_errors_exit_2(
    capsys: pytest.CaptureFixture[str],
    state: Path,
    plain_dir: Path,
    argv: list[str],
    words: list[str],
) -> None:
    res = run_cli(capsys, "--state-dir", str(state), *argv)
    assert_error(res, 2, *words)
    assert not state.exists()  # bad input touches nothing


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["create", "--host", "localhost"], ["--host: not an IP address: 'localhost'"]),
        (["create", "--host", "::1"], ["only IPv4"]),
        (
            ["create", "--config", "/no/such/module.nix"],
            ["--config /no/such/module.nix is not a file"],
        ),
        (["create", "--workspace", "/no/such/dir"], ["is not a directory"]),
    ],
)
def test_invalid_create_options_exit_2(
    capsys: pytest.CaptureFixture[str], state: Path, repo: Path, argv: list[str], words: list[str]
) -> None:
    assert_error(run_cli(capsys, "--state-dir", str(state), *argv), 2, *words)
    assert store.vm_names(StateLayout(state)) == []


@pytest.mark.parametrize("bad", ["a${HOME}b", 'a"b', "a\nb"])
def test_state_dir_ssh_cannot_use(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, plain_dir: Path, bad: str
) -> None:
    res = run_cli(capsys, "--state-dir", str(tmp_path / bad), "list")
    assert res.code == 2 and "agent-vm: error: the state directory" in res.err
    assert "Traceback" not in res.err


def test_not_a_git_repository(
    capsys: pytest.CaptureFixture[str], state: Path, plain_dir: Path
) -> None:
    assert_error(
        run_cli(capsys, "--state-dir", str(state), "create"),
        10,
        f"{plain_dir} is not inside a git repository",
    )
    assert_error(
        run_cli(capsys, "--state-dir", str(state), "up"), 10, "not inside a git repository"
    )
    # Without a repository, a VM must be named.
    assert_error(run_cli(capsys, "--state-dir", str(state), "status"), 10, "name the VM")


@pytest.mark.parametrize("verb", ["create", "up", "status", "start", "stop", "logs", "destroy"])
def test_outside_a_repository_exits_as_the_readme_says(
    capsys: pytest.CaptureFixture[str], state: Path, plain_dir: Path, verb: str
) -> None:
    rows = [line for line in README.read_text().splitlines() if "not a repository" in line]
    assert len(rows) == 1, rows
    code = int(rows[0].split("|")[1])
    assert_error(run_cli(capsys, "--state-dir", str(state), verb), code, "git repository")


def test_a_bare_repository_says_so(
    capsys: pytest.CaptureFixture[str], state: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bare = tmp_path / "bare.git"
    git(tmp_path, "init", "-q", "--bare", str(bare))
    monkeypatch.chdir(bare)
    res = run_cli(capsys, "--state-dir", str(state), "create")
    assert_error(res, 10, "is a bare repository", "hint: run agent-vm in a clone")
    res = run_cli(capsys, "--state-dir", str(state), "status")
    assert_error(res, 10, "is a bare repository", "hint: name the VM")


def test_create_says_what_the_workspace_lacks(
    capsys: pytest.CaptureFixture[str], state: Path, repo: Path
) -> None:
    """Uncommitted changes and submodules are not in a one-commit clone."""
    sub = make_repo(repo.parent / "sub")
    git(repo, "-c", "protocol.file.allow=always", "submodule", "add", "-q", str(sub), "vendor/sub")
    git(repo, "commit", "-q", "-m", "submodule")
    (repo / "README").write_text("changed\n")
    (repo / "scratch").write_text("new\n")
    res = run_cli(capsys, "--state-dir", str(state), "create")
    assert res.code == 0, res.err
    assert res.err.splitlines() == [
        f"warning: 2 uncommitted change(s) in {repo} are not in the workspace "
        f"(it is commit {git(repo, 'rev-parse', 'HEAD')[:12]}; -v lists them)",
        "warning: 1 submodule(s) are empty directories in the workspace (-v lists them)",
    ]
    run_cli(capsys, "--state-dir", str(state), "destroy", "--force")
    res = run_cli(capsys, "--state-dir", str(state), "-v", "create")
    assert res.code == 0, res.err
    name = store.vm_names(StateLayout(state))[0]
    for line in (
        "not in the workspace:  M README",
        "not in the workspace: ?? scratch",
        "submodule not in the workspace: vendor/sub",
    ):
        assert f"[{name}] {line}" in res.err.splitlines(), res.err


def test_unknown_branch(capsys: pytest.CaptureFixture[str], state: Path, repo: Path) -> None:
    assert_error(
        run_cli(capsys, "--state-dir", str(state), "create", "--branch", "nope"),
        10,
        "unknown branch 'nope'",
    )
    assert_error(
        run_cli(capsys, "--state-dir", str(state), "create", "--branch", "a..b"),
        2,
        "not a valid branch name",
    )


def test_empty_repository(
    capsys: pytest.CaptureFixture[str], state: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    git(empty, "init", "-q")
    monkeypatch.chdir(empty)
    assert_error(run_cli(capsys, "--state-dir", str(state), "create"), 10, "has no commits yet")


@pytest.mark.parametrize(
    "verb",
    [
        "status",
        "start",
        "stop",
        "restart",
        "update",
        "reset",
        "suspend",
        "resume",
        "destroy",
        "shell",
        "console",
        "logs",
        "diff",
        "pull",
        "push",
    ],
)
def test_unknown_vm(capsys: pytest.CaptureFixture[str], state: Path, repo: Path, verb: str) -> None:
    assert_error(
        run_cli(capsys, "--state-dir", str(state), verb, "no-such-vm"),
        3,
        "no VM for branch 'no-such-vm'",
    )


def test_no_vm_for_the_current_branch(
    capsys: pytest.CaptureFixture[str], state: Path, repo: Path
) -> None:
    assert_error(
        run_cli(capsys, "--state-dir", str(state), "status"),
        3,
        "no VM for the current branch 'main'",
        "agent-vm up",
    )


def test_corrupt_vm_json(capsys: pytest.CaptureFixture[str], state: Path, plain_dir: Path) -> None:
    layout = StateLayout(state)
    vm = write_vm(layout, vm_config())
    vm.config.write_text('{"name": "main-0123abcd", "ssh_port": ')
    for verb in ("status", "start", "stop", "update", "reset", "destroy", "shell", "logs"):
        assert_error(
            run_cli(capsys, "--state-dir", str(state), verb, "main-0123abcd"),
            11,
            f"{vm.config} is corrupt",
            "destroy --force main-0123abcd",
        )
    # list keeps showing the others, and this one as broken.
    write_vm(layout, vm_config("other-0123abcd", ssh_port=2223, agent_port=8001))
    res = run_cli(capsys, "--state-dir", str(state), "list", "--json")
    assert res.code == 0, res.err
    rows = {r["name"]: r for r in json.loads(res.out)["vms"]}
    assert rows["main-0123abcd"]["state"] == "broken"
    assert str(vm.config) in rows["main-0123abcd"]["error"]
    assert rows["other-0123abcd"]["state"] == "stopped"
    # The documented recovery works.
    res = run_cli(capsys, "--state-dir", str(state), "destroy", "--force", "main-0123abcd")
    assert res.code == 0, res.err
    assert not vm.dir.exists()


def test_corrupt_runtime_json(
    capsys: pytest.CaptureFixture[str], state: Path, plain_dir: Path
) -> None:
    vm = write_vm(StateLayout(state), vm_config())
    vm.runtime.write_text("[1, 2")
    assert_error(
        run_cli(capsys, "--state-dir", str(state), "status", "main-0123abcd"),
        11,
        f"{vm.runtime} is corrupt",
    )


def test_already_exists_and_not_running(
    capsys: pytest.CaptureFixture[str], state: Path, repo: Path
) -> None:
    res = run_cli(capsys, "--state-dir", str(state), "create")
    assert res.code == 0, res.err
    assert res.out.startswith("created VM main-")
    assert_error(run_cli(capsys, "--state-dir", str(state), "create"), 4, "already exists")
    assert_error(run_cli(capsys, "--state-dir", str(state), "stop"), 6, "is not running")
    assert_error(run_cli(capsys, "--state-dir", str(state), "shell"), 6, "is stopped")
    assert_error(run_cli(capsys, "--state-dir", str(state), "console"), 6)


def test_destroy_refuses_unsaved_work(
    capsys: pytest.CaptureFixture[str], state: Path, repo: Path
) -> None:
    assert run_cli(capsys, "--state-dir", str(state), "create").code == 0
    (name,) = store.vm_names(StateLayout(state))
    ws = StateLayout(state).vm(name).workspace
    (ws / "README").write_text("agent was here\n")
    assert_error(
        run_cli(capsys, "--state-dir", str(state), "destroy"),
        13,
        "uncommitted changes to 1 file(s)",
        "agent-vm pull",
        "--force",
    )
    assert ws.exists()
    res = run_cli(capsys, "--state-dir", str(state), "destroy", "--force")
    assert res.code == 0 and res.out == f"destroyed VM {name}\n"
    assert not ws.exists()


def test_update_and_reset_of_a_stopped_vm(
    capsys: pytest.CaptureFixture[str], state: Path, repo: Path
) -> None:
    assert run_cli(capsys, "--state-dir", str(state), "create").code == 0
    res = run_cli(capsys, "--state-dir", str(state), "update", "--memory", "4096", "--cores", "4")
    assert res.code == 0 and "applies on next start" in res.out
    (name,) = store.vm_names(StateLayout(state))
    cfg = store.load_config(StateLayout(state).vm(name))
    assert (cfg.memory_mib, cfg.cores) == (4096, 4)
    res = run_cli(capsys, "--state-dir", str(state), "reset")
    assert res.code == 0 and "it had no disk yet" in res.out


def test_internal_error_is_one_line(
    capsys: pytest.CaptureFixture[str],
    state: Path,
    plain_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def boom(ctx: object, a: object) -> int:
        raise RuntimeError("kaput")

    monkeypatch.setitem(commands.COMMANDS, "list", boom)
    monkeypatch.setattr(cli, "COMMANDS", commands.COMMANDS)
    res = run_cli(capsys, "--state-dir", str(state), "list")
    assert res.code == 1
    assert (
        res.err
        == "agent-vm: internal error: RuntimeError: kaput (rerun with -d for the traceback)\n"
    )
    res = run_cli(capsys, "--state-dir", str(state), "-d", "list")
    assert res.code == 1 and "Traceback" in res.err  # only with -d


def test_ctrl_c_is_exit_130(
    capsys: pytest.CaptureFixture[str],
    state: Path,
    plain_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def interrupted(ctx: object, a: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setitem(commands.COMMANDS, "list", interrupted)
    res = run_cli(capsys, "--state-dir", str(state), "list")
    assert res.code == 130 and res.err == "agent-vm: interrupted\n"


def test_debug_shows_the_traceback_of_a_typed_error(
    capsys: pytest.CaptureFixture[str], state: Path, repo: Path
) -> None:
    res = run_cli(capsys, "--state-dir", str(state), "-d", "status", "nope")
    assert res.code == 3 and "Traceback" in res.err and "agent-vm: error: no VM" in res.err


# --- a real process ---------------------------------------------------------------------


def test_module_entry_bad_input(tmp_path: Path) -> None:
    res = run_module("--state-dir", str(tmp_path / "s"), "status", "nope", cwd=tmp_path)
    assert_error(res, 3, "agent-vm: error: no VM")
    res = run_module("--state-dir", str(tmp_path / "s"), "create", "--port", "70000", cwd=tmp_path)
    assert_error(res, 2, "between 1024 and 65535")
    res = run_module("--version")
    assert res.code == 0 and res.out.startswith("agent-vm ")


def test_missing_git(tmp_path: Path) -> None:
    empty_path = tmp_path / "empty-bin"
    empty_path.mkdir()
    repo = make_repo(tmp_path / "repo")
    res = run_module(
        "--state-dir", str(tmp_path / "s"), "create", cwd=repo, env={"PATH": str(empty_path)}
    )
    assert_error(res, 9, "'git' was not found on PATH", "hint: install git")


def test_missing_ssh_keygen(tmp_path: Path) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "git").symlink_to(_which("git"))
    repo = make_repo(tmp_path / "repo")
    state = tmp_path / "s"
    res = run_module("--state-dir", str(state), "create", cwd=repo, env={"PATH": str(bindir)})
    assert_error(res, 9, "'ssh-keygen' was not found", "openssh-client")
    # Nothing half-made is left behind.
    assert list((state / "vms").iterdir()) == []


def test_missing_nix_on_start(tmp_path: Path) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for tool in ("git", "ssh-keygen"):
        (bindir / tool).symlink_to(_which(tool))
    repo = make_repo(tmp_path / "repo")
    state = tmp_path / "s"
    env = {"PATH": str(bindir), "AGENT_VM_FLAKE": "github:example/agent-vm"}
    res = run_module("--state-dir", str(state), "create", cwd=repo, env=env)
    assert res.code == 0, res.err
    res = run_module("--state-dir", str(state), "start", cwd=repo, env=env)
    assert res.code == 9 and "Traceback" not in res.err
    assert res.err.endswith(
        "agent-vm: error: 'nix' was not found on PATH\n"
        "agent-vm: hint: install nix (https://nixos.org/download)\n"
    )
    # Nothing ran: the VM is stopped, not failed, and can be started later.
    (name,) = store.vm_names(StateLayout(state))
    assert store.load_runtime(StateLayout(state).vm(name)).state is VmState.STOPPED


def test_start_failure_is_one_error_line(
    capsys: pytest.CaptureFixture[str], state: Path, repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """nix missing: the only error line is the real one (nix never ran, so
    no 'nix build failed')."""
    assert run_cli(capsys, "--state-dir", str(state), "create").code == 0
    bindir = repo.parent / "bin"
    bindir.mkdir()
    (bindir / "git").symlink_to(_which("git"))
    monkeypatch.setenv("AGENT_VM_FLAKE", "github:example/agent-vm")
    with local.env(PATH=str(bindir)):
        res = run_cli(capsys, "--state-dir", str(state), "start")
    assert_error(res, 9, "'nix' was not found on PATH")


def _which(tool: str) -> str:
    path = shutil.which(tool)
    assert path is not None, f"{tool} is needed for this test"
    return path


# --- completion -------------------------------------------------------------------------


def test_vm_name_completer(state: Path, plain_dir: Path) -> None:
    layout = StateLayout(state)
    for n in ("main-0123abcd", "feature-x-89abcdef", "fix-1-00000000"):
        write_vm(layout, vm_config(n))
    (layout.vms / ".half-made-0.creating-1").mkdir()
    ns = argparse.Namespace(state_dir=str(state))
    assert cli.complete_vms("", ns) == ["feature-x-89abcdef", "fix-1-00000000", "main-0123abcd"]
    assert cli.complete_vms("f", ns) == ["feature-x-89abcdef", "fix-1-00000000"]
    assert cli.complete_vms("zzz", ns) == []
    assert cli.complete_vms("", argparse.Namespace(state_dir=str(state / "none"))) == []


def test_vm_name_completer_adds_branches_in_a_repository(state: Path, repo: Path) -> None:
    git(repo, "branch", "feature/y")
    write_vm(StateLayout(state), vm_config("main-0123abcd"))
    ns = argparse.Namespace(state_dir=str(state))
    assert cli.complete_vms("", ns) == ["main-0123abcd", "feature/y", "main"]
    assert cli.complete_branches("fea") == ["feature/y"]


def test_completion_through_argcomplete(tmp_path: Path) -> None:
    """The real argcomplete protocol, as the shell hook drives it."""
    state = tmp_path / "state"
    for n in ("main-0123abcd", "feature-x-89abcdef"):
        write_vm(StateLayout(state), vm_config(n))
    out = tmp_path / "completions"
    line = f"agent-vm --state-dir {state} status "
    res = run_module(
        cwd=tmp_path,
        env={
            "_ARGCOMPLETE": "1",
            "_ARGCOMPLETE_IFS": "\n",
            "COMP_LINE": line,
            "COMP_POINT": str(len(line)),
            "_ARGCOMPLETE_STDOUT_FILENAME": str(out),
        },
    )
    assert res.code == 0, res.err
    words = out.read_text().split()
    assert sorted(w for w in words if not w.startswith("-")) == [
        "feature-x-89abcdef",
        "main-0123abcd",
    ]


def test_shell_command_after_double_dash() -> None:
    assert cli._split_command(["shell", "main", "--", "ls", "--", "-la"]) == (
        ["shell", "main"],
        ["ls", "--", "-la"],
    )
    assert cli._split_command(["status", "--", "x"]) == (["status", "--", "x"], [])


@pytest.mark.parametrize("verb", ["logs", "status", "stop", "console"])
def test_a_command_after_double_dash_is_refused_where_the_verb_takes_none(
    capsys: pytest.CaptureFixture[str], state: Path, plain_dir: Path, verb: str
) -> None:
    """`logs shell -- x`: "shell" names a VM here, and x was dropped silently."""
    write_vm(StateLayout(state), vm_config("shell"))
    res = run_cli(capsys, "--state-dir", str(state), verb, "shell", "--", "x")
    assert_error(res, 2, "unrecognized arguments: x")


def test_shell_named_vm_still_takes_a_command() -> None:
    args = cli._parse(cli.build_parser(), ["shell", "shell", "--", "ls", "-la"])
    assert (args.verb, args.target, args.remote) == ("shell", "shell", ["ls", "-la"])


def test_a_closed_output_pipe_ends_quietly(tmp_path: Path) -> None:
    """`agent-vm list | head -1`: the reader is gone before we write."""
    layout = StateLayout(tmp_path / "state")
    for i in range(3):
        write_vm(layout, vm_config(f"vm{i}-0123abcd"))
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    for argv in (["list"], ["list", "--json"], ["status", "--json", "vm1-0123abcd"]):
        read, write = os.pipe()
        os.close(read)
        with os.fdopen(write, "wb") as out:
            res = subprocess.run(
                [sys.executable, "-m", "agent_vm", "--state-dir", str(layout.root), *argv],
                stdout=out,
                stderr=subprocess.PIPE,
                cwd=tmp_path,
                env=env,
                text=True,
                check=False,
                timeout=60,
            )
        assert (res.returncode, res.stderr) == (141, ""), argv


def test_logs_of_a_vm_never_started_says_so(
    capsys: pytest.CaptureFixture[str], state: Path, plain_dir: Path
) -> None:
    """It printed nothing at all (an empty line in a terminal)."""
    write_vm(StateLayout(state), vm_config())
    res = run_cli(capsys, "--state-dir", str(state), "logs", "main-0123abcd")
    assert (res.code, res.err) == (0, "")
    assert res.out == "VM main-0123abcd has no serial log yet: it has not been started\n"


def test_up_checks_the_host_before_making_a_vm(
    capsys: pytest.CaptureFixture[str], state: Path, repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENT_VM_ACCEL", "fastest")
    res = run_cli(capsys, "--state-dir", str(state), "up")
    assert_error(res, 2, "AGENT_VM_ACCEL must be kvm, tcg or auto, not 'fastest'")
    assert store.vm_names(StateLayout(state)) == []


def test_create_in_a_repository_whose_path_has_percent_41(
    capsys: pytest.CaptureFixture[str], state: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """git decoded file:///…/p%41q to …/pAq: create failed (or cloned another repository)."""
    repo = make_repo(tmp_path / "p%41q #?")
    monkeypatch.chdir(repo)
    res = run_cli(capsys, "--state-dir", str(state), "create", "--json")
    assert res.code == 0, res.err
    workspace = Path(json.loads(res.out)["workspace"])
    assert git(workspace, "rev-parse", "HEAD") == git(repo, "rev-parse", "HEAD")


def test_a_tag_named_like_the_current_branch_changes_nothing(
    capsys: pytest.CaptureFixture[str], state: Path, repo: Path
) -> None:
    """It made the current branch "heads/main": a second VM, upstream origin/heads/main."""
    assert run_cli(capsys, "--state-dir", str(state), "create").code == 0
    git(repo, "tag", "main")
    res = run_cli(capsys, "--state-dir", str(state), "status", "--json")
    assert res.code == 0, res.err
    assert json.loads(res.out)["branch"] == "main"
    assert_error(run_cli(capsys, "--state-dir", str(state), "create"), 4, "already exists")


def test_suspend_resume_and_the_workspace_mode(
    capsys: pytest.CaptureFixture[str], state: Path, repo: Path
) -> None:
    sd = ("--state-dir", str(state))
    assert_error(run_cli(capsys, *sd, "create", "--workspace-mode", "tmpfs"), 2, "invalid choice")
    res = run_cli(capsys, *sd, "create", "--workspace-mode", "disk")
    assert res.code == 0, res.err
    assert_error(run_cli(capsys, *sd, "suspend"), 6, "is stopped, not running")
    assert_error(run_cli(capsys, *sd, "resume"), 6, "is stopped, not suspended", "'agent-vm start'")
    assert_error(
        run_cli(capsys, *sd, "update", "--workspace-mode", "share"),
        2,
        "workspace mode is chosen when a VM is made",
    )
    # Not running: a disk workspace cannot be asked, so destroy needs --force.
    assert_error(run_cli(capsys, *sd, "destroy"), 13, "reads only through the running guest")
    assert run_cli(capsys, *sd, "destroy", "--force").code == 0
