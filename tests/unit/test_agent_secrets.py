"""agent_secrets: the agent token and the MCP servers' environment file are
private files in the VM's state, made once, never written anywhere Nix reads."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from agent_vm import agent_secrets, params
from agent_vm.errors import CorruptState, InvalidInput
from agent_vm.models import Runtime
from agent_vm.paths import StateLayout, VmPaths
from unit_fakes import run_cli, vm_config, write_vm


@pytest.fixture
def vm(tmp_path: Path) -> VmPaths:
    return write_vm(StateLayout(tmp_path / "state"), vm_config())  # type: ignore[no-any-return]


def mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_prepare_makes_a_private_random_token_once(vm: VmPaths) -> None:
    token = agent_secrets.prepare(vm)
    assert len(token) == 64 and int(token, 16) >= 0 and token == token.lower()
    assert mode(vm.secrets_dir) == 0o700
    assert mode(vm.agent_token) == 0o600 and mode(vm.mcp_secrets) == 0o600
    assert vm.mcp_secrets.read_text() == ""
    # Kept across starts: clients configured with it keep working.
    assert agent_secrets.prepare(vm) == token == agent_secrets.read_token(vm)


def test_every_vm_gets_its_own_token(tmp_path: Path) -> None:
    layout = StateLayout(tmp_path / "state")
    a = write_vm(layout, vm_config("a-0123abcd"))
    b = write_vm(layout, vm_config("b-0123abcd"))
    assert agent_secrets.prepare(a) != agent_secrets.prepare(b)


def test_a_vm_made_before_tokens_gets_one_at_its_next_start(vm: VmPaths) -> None:
    assert agent_secrets.read_token(vm) is None
    assert not vm.secrets_dir.exists()
    token = agent_secrets.prepare(vm)
    assert vm.agent_token.read_text() == token + "\n"


def test_a_set_environment_file_is_kept_by_prepare(vm: VmPaths) -> None:
    assert agent_secrets.set_mcp_secrets(vm, "API_TOKEN=s3cret\n")
    agent_secrets.prepare(vm)
    assert vm.mcp_secrets.read_text() == "API_TOKEN=s3cret\n"
    assert not agent_secrets.set_mcp_secrets(vm, "API_TOKEN=s3cret\n")  # no change
    assert agent_secrets.set_mcp_secrets(vm, "")
    assert mode(vm.mcp_secrets) == 0o600


@pytest.mark.parametrize("content", ["", "short\n", "A" * 64, "ab" * 32 + "; evil"])
def test_a_damaged_token_file_is_corrupt_state(vm: VmPaths, content: str) -> None:
    """Never sent or handed to the guest as it is (it ends up in nginx's
    configuration there)."""
    vm.secrets_dir.mkdir(mode=0o700)
    vm.agent_token.write_text(content)
    with pytest.raises(CorruptState, match="not an agent-vm token") as exc:
        agent_secrets.read_token(vm)
    assert exc.value.hint == "delete it; the VM's next start makes a new one"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "# comment\n\nGITHUB_TOKEN=ghp_x\n",
        "A=\nB=has spaces and = signs and 'quotes'\n_X1=1",
    ],
)
def test_environment_files_that_load(text: str) -> None:
    agent_secrets.check_env(text, "f")


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("export TOKEN=x\n", 1),
        ("OK=1\nno equals sign here\n", 2),
        ("OK=1\n\n1BAD=x\n", 3),
        ("=s3cret\n", 1),
        ("BAD-NAME=x\n", 1),
    ],
)
def test_environment_files_that_do_not_load_name_the_line_not_the_value(
    tmp_path: Path, text: str, line: int
) -> None:
    f = tmp_path / "mcp.env"
    f.write_text(text)
    with pytest.raises(InvalidInput) as exc:
        agent_secrets.read_env_file(f)
    assert exc.value.message == f"--mcp-env {f} line {line}: expected NAME=value"
    # The value may be a secret: it is never echoed.
    assert text.splitlines()[line - 1] not in exc.value.message


def test_a_missing_or_huge_environment_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="cannot read it"):
        agent_secrets.read_env_file(tmp_path / "missing")
    big = tmp_path / "big"
    big.write_text("A=" + "x" * agent_secrets.MAX_ENV_BYTES)
    with pytest.raises(InvalidInput, match="larger than"):
        agent_secrets.read_env_file(big)


def test_the_token_and_the_secrets_are_not_in_params_json(
    vm: VmPaths, monkeypatch: pytest.MonkeyPatch
) -> None:
    """params.json is what Nix reads: nothing secret may be in it."""
    token = agent_secrets.prepare(vm)
    agent_secrets.set_mcp_secrets(vm, "API_TOKEN=s3cret-value\n")
    monkeypatch.setattr(params, "workspace_share", lambda: "9p")
    text = params.for_vm(vm, vm_config()).to_json()
    assert token not in text and "s3cret-value" not in text


def test_update_mcp_env_stores_a_private_copy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    layout = StateLayout(tmp_path / "state")
    vm = write_vm(layout, vm_config())
    source = tmp_path / "mine.env"
    source.write_text("API_TOKEN=s3cret\n")
    source.chmod(0o644)
    res = run_cli(
        capsys, "--state-dir", str(layout.root), "update", vm.name, "--mcp-env", str(source)
    )
    assert res.code == 0, res.err
    assert vm.mcp_secrets.read_text() == "API_TOKEN=s3cret\n"
    assert mode(vm.mcp_secrets) == 0o600
    assert "s3cret" not in res.out + res.err


def test_a_bad_mcp_env_changes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    layout = StateLayout(tmp_path / "state")
    vm = write_vm(layout, vm_config(), Runtime())
    agent_secrets.set_mcp_secrets(vm, "OLD=1\n")
    before = vm.config.read_text()
    bad = tmp_path / "bad.env"
    bad.write_text('export TOKEN="s3cret"\n')
    res = run_cli(
        capsys, "--state-dir", str(layout.root), "update", vm.name, "--memory", "4096",
        "--mcp-env", str(bad),
    )  # fmt: skip
    assert res.code == 2
    assert res.err.startswith(f"agent-vm: error: --mcp-env {bad} line 1: expected NAME=value")
    assert "s3cret" not in res.err
    assert vm.mcp_secrets.read_text() == "OLD=1\n" and vm.config.read_text() == before
