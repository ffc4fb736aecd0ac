"""models: every JSON file round-trips through its pydantic model; params.json
is exactly the camelCase contract of docs/contract.md; out-of-range values
are refused."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

import pytest
from agent_vm.models import (
    GuestUser,
    Network,
    Runtime,
    StageTiming,
    VmConfig,
    VmParams,
    VmState,
    WorkspaceShare,
)
from pydantic import ValidationError
from unit_fakes import ROOT, vm_config


def contract_example() -> dict[str, Any]:
    """The params.json example in docs/contract.md, parsed."""
    doc = (ROOT / "docs" / "contract.md").read_text()
    blocks = re.findall(r"```json\n(.*?)```", doc, flags=re.S)
    assert len(blocks) == 1, "docs/contract.md should show exactly one params.json"
    data: dict[str, Any] = json.loads(blocks[0])
    return data


# --- params.json: the contract -------------------------------------------------------


def test_contract_example_round_trips_exactly() -> None:
    example = contract_example()
    params = VmParams.model_validate(example)
    dumped = json.loads(params.to_json())
    assert dumped == example
    assert list(dumped) == list(example)  # same keys in the same order as documented
    assert list(dumped["workspace"]) == list(example["workspace"])


def test_params_json_uses_exactly_the_documented_keys() -> None:
    example = contract_example()
    params = VmParams.model_validate(example)
    assert set(json.loads(params.to_json())) == set(example)
    assert params.memory_mib == example["memoryMiB"]
    assert params.disk_size_mib == example["diskSizeMiB"]
    assert params.state_dir == example["stateDir"]
    assert params.workspace.security_model == example["workspace"]["securityModel"]


def test_params_built_from_python_names_dump_camel_case() -> None:
    params = VmParams(
        name="main-0123abcd",
        state_dir="/s/vms/main-0123abcd",
        host_address="127.0.0.1",
        ssh_port=2222,
        agent_port=8000,
        memory_mib=1024,
        cores=1,
        disk_size_mib=4096,
        network=Network.NONE,
        workspace=WorkspaceShare(host_path="/w", security_model="mapped-xattr"),
        user=GuestUser(uid=1000, gid=1000),
    )
    text = params.to_json()
    assert text.endswith("}\n")
    data = json.loads(text)
    assert data["memoryMiB"] == 1024 and data["diskSizeMiB"] == 4096
    assert data["network"] == "none" and data["share"] == "9p"
    assert data["guestAgentPort"] == 8000 and data["userModule"] is None
    assert data["workspace"] == {
        "hostPath": "/w",
        "tag": "workspace",
        "mountPoint": "/workspace",
        "securityModel": "mapped-xattr",
    }
    assert data["user"] == {"name": "dev", "uid": 1000, "gid": 1000}
    assert not any("_" in k for k in data)
    assert VmParams.model_validate_json(text) == params


@pytest.mark.parametrize(
    "bad",
    [
        {"sshPort": 80},
        {"sshPort": 70000},
        {"agentPort": 1023},
        {"agentPort": 65536},
        {"guestAgentPort": 0},
        {"memoryMiB": 0},
        {"memoryMiB": 255},
        {"cores": 0},
        {"cores": 257},
        {"diskSizeMiB": 0},
        {"network": "bridge"},
        {"share": "nfs"},
        {"version": 1},
        {"sshPort": "2222x"},
        {"unexpected": 1},
        {"workspace": {"hostPath": "/w", "securityModel": "passthrough"}},
        {"user": {"name": "dev", "uid": 0, "gid": 0}},
    ],
)
def test_params_refuse_out_of_range_values(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        VmParams.model_validate(contract_example() | bad)


def test_params_require_every_key_without_a_default() -> None:
    for key in ("name", "stateDir", "sshPort", "memoryMiB", "workspace", "user"):
        data = contract_example()
        del data[key]
        with pytest.raises(ValidationError):
            VmParams.model_validate(data)


def test_params_are_frozen() -> None:
    params = VmParams.model_validate(contract_example())
    with pytest.raises(ValidationError):
        params.ssh_port = 3000  # type: ignore[misc]


def test_guest_uid_above_65535_is_accepted() -> None:
    """Linux uids are 32-bit: LDAP/AD and systemd-homed users often have
    uids above 65535, and the guest can give its user any of them."""
    data = contract_example() | {"user": {"name": "dev", "uid": 1_234_567, "gid": 1_234_567}}
    assert VmParams.model_validate(data).user.uid == 1_234_567


# --- vm.json -----------------------------------------------------------------------


def test_vm_config_round_trips() -> None:
    cfg = vm_config(
        ephemeral=True, network="none", user_module="/home/u/guest.nix", ssh_port_pinned=True
    )
    text = cfg.model_dump_json()
    back = VmConfig.model_validate_json(text)
    assert back == cfg
    assert back.network is Network.NONE
    assert back.created_at == datetime(2026, 11, 25, tzinfo=UTC)
    data = json.loads(text)
    assert data["memory_mib"] == 2048 and data["cores"] == 2 and data["disk_size_mib"] == 8192


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("ssh_port", 0),
        ("ssh_port", 1023),
        ("ssh_port", 65536),
        ("agent_port", 70000),
        ("agent_port", -1),
        ("memory_mib", 0),
        ("memory_mib", 255),
        ("memory_mib", 1024 * 1024 + 1),
        ("cores", 0),
        ("cores", 257),
        ("disk_size_mib", 511),
        ("network", "bridge"),
        ("host_address", "localhost"),
        ("host_address", "::1"),
        ("host_address", "127.0.0.1; rm -rf /"),
        ("version", 2),
    ],
)
def test_vm_config_refuses_bad_values(field: str, value: object) -> None:
    with pytest.raises(ValidationError) as exc:
        vm_config(**{field: value})
    assert exc.value.errors()[0]["loc"][0] == field


def test_vm_config_validates_assignment_too() -> None:
    cfg = vm_config()
    with pytest.raises(ValidationError):
        cfg.memory_mib = 0
    with pytest.raises(ValidationError):
        cfg.ssh_port = 99999


def test_vm_config_refuses_unknown_keys() -> None:
    data = json.loads(vm_config().model_dump_json())
    with pytest.raises(ValidationError, match="extra"):
        VmConfig.model_validate(data | {"sshPort": 2222})


def test_host_address_forms() -> None:
    assert vm_config(host_address="0.0.0.0").host_address == "0.0.0.0"
    assert vm_config(host_address="10.1.2.3").host_address == "10.1.2.3"
    # Leading zeros are refused (inet_aton, and so QEMU, would read them as octal).
    with pytest.raises(ValidationError):
        vm_config(host_address="127.000.000.010")


# --- runtime.json ----------------------------------------------------------------------


def test_runtime_round_trips() -> None:
    rt = Runtime(
        state=VmState.RUNNING,
        pid=1234,
        pid_start_time=987654,
        ssh_port=2222,
        agent_port=8000,
        started_at=datetime(2026, 1, 1, tzinfo=UTC),
        ready_at=datetime(2026, 1, 1, 0, 0, 9, tzinfo=UTC),
        stages=[
            StageTiming(stage="build", seconds=1.5, ok=True),
            StageTiming(stage="ssh", seconds=7.25, ok=True),
        ],
    )
    back = Runtime.model_validate_json(rt.model_dump_json())
    assert back == rt and back.state is VmState.RUNNING


def test_runtime_defaults_to_stopped() -> None:
    assert Runtime() == Runtime.model_validate_json("{}")
    assert Runtime().state is VmState.STOPPED and Runtime().pid is None


@pytest.mark.parametrize(
    "bad",
    [
        {"state": "dancing"},
        {"pid": "x"},
        {"stages": [{"stage": "boot", "seconds": 1, "ok": True}]},
        {"version": 2},
        {"extra": 1},
    ],
)
def test_runtime_refuses_bad_values(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        Runtime.model_validate(bad)


def test_every_state_is_a_plain_string() -> None:
    assert [s.value for s in VmState] == [
        *("stopped", "starting", "running", "stopping", "failed"),
        *("suspending", "suspended"),
    ]
    assert json.loads(Runtime(state=VmState.FAILED).model_dump_json())["state"] == "failed"
