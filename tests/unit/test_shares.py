"""shares: `create --workspace` refuses what is not a project: the system,
the whole home directory, and agent-vm's own state (the guest would own
it, and for a root host user `start` tags every file in it)."""

from __future__ import annotations

from pathlib import Path

import pytest
from agent_vm.errors import InvalidInput
from agent_vm.shares import check_workspace_dir
from unit_fakes import make_repo, run_cli


@pytest.mark.parametrize(
    "path", ["/", "/nix", "/etc", "/usr", "/usr/lib", "/proc", "/home", "/var", "/tmp", "/root"]
)
def test_system_directories_are_refused(tmp_path: Path, path: str) -> None:
    """Whether or not they exist here (/nix on a host without Nix)."""
    with pytest.raises(InvalidInput) as exc:
        check_workspace_dir(Path(path), tmp_path / "state")
    assert exc.value.exit_code == 2
    assert exc.value.message == f"--workspace {path}: {path} is a system directory, not a project"
    assert exc.value.hint is not None and "project" in exc.value.hint


def test_a_symlink_to_a_system_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "innocent").symlink_to("/etc")
    with pytest.raises(InvalidInput, match="/etc is a system directory"):
        check_workspace_dir(tmp_path / "innocent", tmp_path / "state")


def test_the_home_directory_itself_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home" / "alice"
    (home / "src" / "project").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    with pytest.raises(InvalidInput, match="is your whole home directory"):
        check_workspace_dir(home, tmp_path / "state")
    project = home / "src" / "project"
    assert check_workspace_dir(project, home / ".local" / "state" / "agent-vm") == project


def test_a_tree_holding_the_state_dir_is_refused(tmp_path: Path) -> None:
    state = tmp_path / "work" / "state"
    state.mkdir(parents=True)
    for holder in (tmp_path, tmp_path / "work", state):
        with pytest.raises(InvalidInput, match="contains agent-vm's state directory"):
            check_workspace_dir(holder, state)
    (state / "vms" / "other" / "workspace").mkdir(parents=True)
    with pytest.raises(InvalidInput, match="is inside agent-vm's state directory"):
        check_workspace_dir(state / "vms" / "other" / "workspace", state)


def test_a_project_directory_is_shared_resolved(tmp_path: Path) -> None:
    (tmp_path / "project").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "project")
    assert check_workspace_dir(tmp_path / "link", tmp_path / "state") == tmp_path / "project"


def test_create_refuses_the_root_before_making_anything(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(make_repo(tmp_path / "repo"))
    state = tmp_path / "state"
    res = run_cli(capsys, "--state-dir", str(state), "create", "--workspace", "/")
    assert res.code == 2
    assert res.err.startswith("agent-vm: error: --workspace /: / is a system directory")
    assert not (state / "vms").exists() or not any((state / "vms").iterdir())
