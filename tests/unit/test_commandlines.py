"""The exact nix / git / ssh / ssh-keygen / qemu-img command lines, with fakes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from agent_vm import gitops, keys, nixbuild, ssh
from agent_vm.errors import BuildFailed, CommandFailed, GitError, InvalidInput, MissingTool
from agent_vm.models import VmConfig
from agent_vm.paths import StateLayout, VmPaths
from plumbum import local
from pytest_subprocess import FakeProcess
from unit_fakes import LAUNCH_ENVS

DATA = Path(__file__).parent / "data"


def vm_paths(tmp_path: Path, name: str = "main-0123abcd") -> VmPaths:
    vm = StateLayout(tmp_path / "state").vm(name)
    vm.dir.mkdir(parents=True)
    return vm


def config(name: str = "main-0123abcd") -> VmConfig:
    return VmConfig.model_validate(
        {
            "name": name,
            "branch": "main",
            "repo": "/src/repo",
            "commit": "a" * 40,
            "workspace": "/state/vms/x/workspace",
            "workspace_owned": True,
            "host_address": "127.0.0.1",
            "ssh_port": 2222,
            "agent_port": 8000,
            "created_at": "2026-11-25T00:00:00Z",
        }
    )


# --- nix build ---------------------------------------------------------------


def test_build_argv_is_the_contract(tmp_path: Path) -> None:
    link = tmp_path / "runner"
    assert nixbuild.build_argv("path:/flake", "x86_64-linux", link) == [
        "nix",
        "--extra-experimental-features",
        "nix-command flakes",
        "build",
        "--impure",
        "--log-format",
        "internal-json",
        "--print-build-logs",
        "--out-link",
        str(link),
        "path:/flake#legacyPackages.x86_64-linux.agent-vm-runner",
    ]


def test_build_runs_nix_with_the_params_file(fp: FakeProcess, tmp_path: Path) -> None:
    vm = vm_paths(tmp_path)
    argv = nixbuild.build_argv("path:/f", nixbuild.host_system(), vm.runner_link)

    def make_runner(process: object) -> None:
        (vm.runner_link / "bin").mkdir(parents=True)
        vm.runner.write_text("#!/bin/sh\n")

    fp.register(argv, stderr='@nix {"action":"stop","id":1}\n', callback=make_runner)
    assert nixbuild.build(vm, "path:/f") == vm.runner
    assert fp.call_count(argv) == 1
    assert LAUNCH_ENVS[-1]["AGENT_VM_PARAMS"] == str(vm.params)
    assert vm.build_log.exists()


def test_failed_build_shows_the_failing_derivation_log(fp: FakeProcess, tmp_path: Path) -> None:
    vm = vm_paths(tmp_path)
    argv = nixbuild.build_argv("path:/f", nixbuild.host_system(), vm.runner_link)
    fp.register(
        argv,
        stderr=(DATA / "nix-internal-json-failed-build.txt").read_text(),
        returncode=1,
    )
    with pytest.raises(BuildFailed) as exc:
        nixbuild.build(vm, "path:/f")
    assert "nix build failed (exit 1)" in exc.value.message
    assert exc.value.detail
    assert exc.value.exit_code == 8


def test_default_flake_honours_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENT_VM_FLAKE", "github:example/agent-vm")
    assert nixbuild.default_flake() == "github:example/agent-vm"


def test_missing_nix_is_a_missing_tool(tmp_path: Path) -> None:
    vm = vm_paths(tmp_path)
    # plumbum keeps its own copy of the environment.
    with local.env(PATH=str(tmp_path)), pytest.raises(MissingTool) as exc:
        nixbuild.build(vm, "path:/f")
    assert exc.value.exit_code == 9 and "'nix' was not found" in exc.value.message


# --- git ---------------------------------------------------------------------


def test_workspace_is_a_one_commit_fetch_with_origin(fp: FakeProcess, tmp_path: Path) -> None:
    src = gitops.Checkout(Path("/src/repo"), "feature/x", "c" * 40, detached=False)
    dest = tmp_path / "ws"
    d = str(dest)
    fp.register(["git", "init", "--quiet", d])
    fp.register(["git", "-C", d, "remote", "add", "origin", "/src/repo"])
    fp.register(
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
        ]
    )
    fp.register(
        ["git", "-C", d, "checkout", "--quiet", "-B", "feature/x", "refs/remotes/origin/feature/x"]
    )
    fp.register(["git", "-C", d, "branch", "--quiet", "--set-upstream-to=origin/feature/x"])
    gitops.make_workspace(src, dest)
    assert len(fp.calls) == 5


def test_workspace_for_a_detached_head(fp: FakeProcess, tmp_path: Path) -> None:
    sha = "d" * 40
    src = gitops.Checkout(Path("/r"), f"detached-{sha[:12]}", sha, detached=True)
    d = str(tmp_path / "ws")
    base = f"refs/remotes/origin/detached-{sha[:12]}"
    fp.register(["git", "init", "--quiet", d])
    fp.register(["git", "-C", d, "remote", "add", "origin", "/r"])
    fp.register(["git", "-C", d, "fetch", fp.any()])
    fp.register(["git", "-C", d, "checkout", "--quiet", "--detach", base])
    gitops.make_workspace(src, tmp_path / "ws")
    assert not any("--set-upstream-to" in " ".join(map(str, c)) for c in fp.calls)


def test_failed_fetch_is_a_git_error(fp: FakeProcess, tmp_path: Path) -> None:
    src = gitops.Checkout(Path("/r"), "main", "e" * 40, detached=False)
    d = str(tmp_path / "ws")
    fp.register(["git", "init", "--quiet", d])
    fp.register(["git", "-C", d, "remote", "add", "origin", "/r"])
    fp.register(["git", "-C", d, "fetch", fp.any()], returncode=128, stderr="fatal: no such\n")
    with pytest.raises(GitError) as exc:
        gitops.make_workspace(src, tmp_path / "ws")
    assert "could not make the workspace" in exc.value.message and exc.value.exit_code == 10


def test_not_a_repository(fp: FakeProcess, tmp_path: Path) -> None:
    fp.register(["git", "-C", str(tmp_path), "rev-parse", "--show-toplevel"], returncode=128)
    with pytest.raises(GitError, match="is not inside a git repository"):
        gitops.repo_root(tmp_path)


def test_unknown_and_invalid_branches(fp: FakeProcess) -> None:
    repo = Path("/r")
    fp.register(["git", "-C", "/r", "check-ref-format", "--branch", "nope"])
    fp.register(["git", "-C", "/r", "rev-parse", fp.any()], returncode=1, occurrences=2)
    with pytest.raises(GitError, match="unknown branch 'nope'"):
        gitops.resolve(repo, "nope")
    fp.register(["git", "-C", "/r", "check-ref-format", "--branch", "a..b"], returncode=1)
    with pytest.raises(InvalidInput, match="not a valid branch name"):
        gitops.resolve(repo, "a..b")
    # A leading dash never reaches git as an option.
    fp.register(["git", "-C", "/r", "check-ref-format", "--branch", "-rf"])
    with pytest.raises(InvalidInput):
        gitops.resolve(repo, "-rf")


def test_current_branch_and_detached_head(fp: FakeProcess) -> None:
    repo = Path("/r")
    sha = "f" * 40
    fp.register(["git", "-C", "/r", "symbolic-ref", "--quiet", "--short", "HEAD"], stdout="dev\n")
    fp.register(["git", "-C", "/r", "rev-parse", "--verify", "HEAD^{commit}"], stdout=sha + "\n")
    assert gitops.resolve(repo, None) == gitops.Checkout(repo, "dev", sha, detached=False)
    fp.register(["git", "-C", "/r", "symbolic-ref", "--quiet", "--short", "HEAD"], returncode=1)
    fp.register(["git", "-C", "/r", "rev-parse", "--verify", "HEAD^{commit}"], stdout=sha + "\n")
    co = gitops.resolve(repo, None)
    assert co.detached and co.branch == f"detached-{sha[:12]}"


def test_unsaved_work_reasons(fp: FakeProcess, tmp_path: Path) -> None:
    (tmp_path / ".git").mkdir()
    w = str(tmp_path)
    fp.register(["git", "-C", w, "status", fp.any()], stdout=" M a\n?? b\n")
    fp.register(["git", "-C", w, "rev-list", fp.any()], stdout="3\n")
    fp.register(["git", "-C", w, "stash", "list"], stdout="stash@{0}: WIP\n")
    assert gitops.unsaved_work(tmp_path) == [
        "2 uncommitted change(s)",
        "3 commit(s) that exist nowhere else",
        "stashed changes",
    ]
    fp.register(["git", "-C", w, "status", fp.any()], stdout="")
    fp.register(["git", "-C", w, "rev-list", fp.any()], stdout="0\n")
    fp.register(["git", "-C", w, "stash", "list"], stdout="")
    assert gitops.unsaved_work(tmp_path) == []


# --- ssh / ssh-keygen ------------------------------------------------------------


def test_ssh_argv_pins_keys_and_quotes(tmp_path: Path) -> None:
    vm = StateLayout(tmp_path / "st ate%1").vm("main-0123abcd")
    argv = ssh.command_argv(vm, config(), 2222, ["sh", "-c", "echo 'hi' $HOME"], tty=False)
    assert argv[:3] == ["ssh", "-F", "none"]
    opts = [argv[i + 1] for i, a in enumerate(argv) if a == "-o"]
    assert "StrictHostKeyChecking=yes" in opts
    assert not any("StrictHostKeyChecking=no" in o for o in opts)
    assert f'UserKnownHostsFile="{tmp_path}/st ate%%1/vms/main-0123abcd/ssh/known_hosts"' in opts
    assert f'IdentityFile="{tmp_path}/st ate%%1/vms/main-0123abcd/ssh/id_ed25519"' in opts
    assert "HostKeyAlias=agent-vm-main-0123abcd" in opts and "IdentitiesOnly=yes" in opts
    i = argv.index("--")
    assert argv[i + 1] == "dev@127.0.0.1"
    # One remote string whose words survive the remote shell.
    assert argv[i + 2 :] == ["sh -c 'echo '\\''hi'\\'' $HOME'"]
    assert argv[i - 1] == "-T" and "BatchMode=yes" in opts


def test_ssh_login_failure_is_reported(fp: FakeProcess, tmp_path: Path) -> None:
    vm = vm_paths(tmp_path)
    fp.register(["ssh", fp.any()], returncode=255, stderr="Host key verification failed.\n")
    ok, err = ssh.login_works(vm, config(), 2222)
    assert not ok and "Host key verification failed" in err


def test_keygen_command_lines_and_modes(fp: FakeProcess, tmp_path: Path) -> None:
    vm = vm_paths(tmp_path)

    def write_key(process: object, path: Path) -> None:
        path.write_text("PRIVATE\n")
        Path(f"{path}.pub").write_text(f"ssh-ed25519 AAAAkey{path.name} comment\n")

    for key, comment in ((vm.client_key, "agent-vm@main"), (vm.host_key, "host@main")):
        fp.register(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(key)],
            callback=write_key,
            callback_kwargs={"path": key},
        )
    keys.generate(vm, "main")
    assert oct(vm.ssh_dir.stat().st_mode & 0o777) == "0o700"
    for key in (vm.client_key, vm.host_key):
        assert oct(key.stat().st_mode & 0o777) == "0o600"
    assert vm.known_hosts.read_text() == "agent-vm-main ssh-ed25519 AAAAkeyssh_host_ed25519_key\n"


def test_failing_command_is_one_line(fp: FakeProcess) -> None:
    from agent_vm import tools

    fp.register(["qemu-img", "info", "x"], returncode=1, stderr="a\nqemu-img: Could not open 'x'\n")
    with pytest.raises(CommandFailed) as exc:
        tools.run(["qemu-img", "info", "x"])
    assert (
        exc.value.message == "'qemu-img info' failed with exit code 1: qemu-img: Could not open 'x'"
    )
    assert exc.value.exit_code == 17
    assert json.dumps(exc.value.message).count("\\n") == 0
