"""The pure functions the NixOS modules are built on (lib/guest.nix,
lib/agent.nix, lib/host-units.nix), evaluated with nix-instantiate and
checked against the Python side that consumes their output: the CLI's own
argument parser, its health probe, the parameters model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from agent_vm import cli, commands, health
from nix_eval import LIB, ROOT, NixError, contract_example, evaluate_file, write_expr

EXPR = r"""
{ libDir, what, json ? "null", str ? "" }:
let
  lib = import (/. + libDir) { };
  arg = builtins.fromJSON json;
in
{
  guestSettings = lib.guestSettings (lib.validateParams arg);
  kernelCmdline = lib.kernelCmdline arg;
  qemuBinary = lib.qemuBinary str;
  mcpProxyConfig = lib.mcpProxyConfig arg;
  mcpProxyArgs = lib.mcpProxyArgs arg;
  healthPath = lib.healthPath;
  upArgs = lib.upArgs arg;
  portClashes = lib.portClashes arg;
}.${what}
"""


@pytest.fixture(scope="module")
def expr(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_expr(tmp_path_factory.mktemp("glue"), "glue.nix", EXPR)


def ev(expr: Path, what: str, arg: Any = None, s: str = "") -> Any:
    return evaluate_file(expr, libDir=str(LIB), what=what, json=json.dumps(arg), str=s)


# --- guest ------------------------------------------------------------------------------


def test_guest_settings_hold_only_what_all_of_a_users_vms_share(expr: Path) -> None:
    """Name, ports, keys and paths stay out of the guest system, so every
    branch VM of one host user has the same closure (built once)."""
    p = contract_example()
    got = ev(expr, "guestSettings", p)
    assert got == {
        "user": {"name": "dev", "uid": 1000, "gid": 1000},
        "workspace": {
            "share": "9p",
            "mode": "share",
            "tag": "workspace",
            "mountPoint": "/workspace",
        },
    }
    # The workspace mode reaches the guest (it mounts a disk or a share);
    # a file from before the setting means share.
    disk = ev(expr, "guestSettings", p | {"workspaceMode": "disk"})
    assert disk["workspace"]["mode"] == "disk"
    legacy = {k: v for k, v in p.items() if k != "workspaceMode"}
    assert ev(expr, "guestSettings", legacy)["workspace"]["mode"] == "share"
    # Two VMs differing in everything per-VM get identical settings.
    other = p | {
        "name": "feature-x-99999999",
        "stateDir": "/elsewhere",
        "sshPort": 2300,
        "agentPort": 8100,
        "workspace": p["workspace"] | {"hostPath": "/elsewhere/workspace"},
    }
    assert ev(expr, "guestSettings", other) == got


def test_guest_settings_validate_their_input(expr: Path) -> None:
    bad = contract_example() | {"user": {"name": "dev", "uid": 0, "gid": 0}}
    with pytest.raises(NixError, match="user needs a name"):
        ev(expr, "guestSettings", bad)


def test_kernel_command_line(expr: Path) -> None:
    line = ev(
        expr,
        "kernelCmdline",
        {
            "toplevel": "/nix/store/t-system",
            "kernelParams": ["8250.nr_uarts=1", "loglevel=4"],
            "regInfo": "/nix/store/r-closure-info",
        },
    )
    assert line == (
        "init=/nix/store/t-system/init 8250.nr_uarts=1 loglevel=4"
        " regInfo=/nix/store/r-closure-info/registration"
    )
    bare = ev(expr, "kernelCmdline", {"toplevel": "/t", "kernelParams": []})
    assert bare == "init=/t/init"


def test_qemu_binary(expr: Path) -> None:
    assert ev(expr, "qemuBinary", s="x86_64-linux") == "qemu-system-x86_64"
    assert ev(expr, "qemuBinary", s="aarch64-linux") == "qemu-system-aarch64"
    with pytest.raises(NixError, match="unsupported system riscv64-linux"):
        ev(expr, "qemuBinary", s="riscv64-linux")


# --- agent --------------------------------------------------------------------------------


def test_mcp_proxy_config_leaves_out_disabled_servers(expr: Path) -> None:
    servers = {
        "workspace": {"enable": True, "command": "/bin/ws", "args": [], "env": {"A": "1"}},
        "github": {"enable": False, "command": "/bin/gh", "args": ["stdio"], "env": {}},
        "fs": {"enable": True, "command": "/bin/fs", "args": ["/workspace"], "env": {}},
    }
    assert ev(expr, "mcpProxyConfig", servers) == {
        "mcpServers": {
            "workspace": {"command": "/bin/ws", "args": [], "env": {"A": "1"}},
            "fs": {"command": "/bin/fs", "args": ["/workspace"], "env": {}},
        }
    }


def test_mcp_proxy_arguments(expr: Path) -> None:
    # Guest loopback only: nginx in front of it checks the token.
    assert ev(expr, "mcpProxyArgs", {"port": 8001, "configFile": "/nix/store/c.json"}) == [
        "--host",
        "127.0.0.1",
        "--port",
        "8001",
        "--named-server-config",
        "/nix/store/c.json",
        "--pass-environment",
    ]
    args = ev(
        expr,
        "mcpProxyArgs",
        {"port": 3000, "configFile": "/c", "passEnvironment": False, "extraArgs": ["--debug"]},
    )
    assert args[-2:] == ["--no-pass-environment", "--debug"] and args[3] == "3000"


def test_the_health_path_is_the_one_the_cli_probes(expr: Path) -> None:
    assert ev(expr, "healthPath") == health.HEALTH_PATH == "/status"


# --- host units ---------------------------------------------------------------------------

DECLARED = {
    "branch": "feature/x",
    "hostAddress": "127.0.0.1",
    "sshPort": 2230,
    "agentPort": 8030,
    "memory": 4096,
    "cores": 4,
    "diskSize": 20480,
    "network": "none",
    "ephemeral": False,
    "config": "/nix/store/x-agent-guest.nix",
}


def test_a_declared_vm_is_a_command_line_the_cli_accepts(expr: Path) -> None:
    argv = ev(
        expr, "upArgs", {"stateDir": "/var/lib/agent-vm/agent-vm", "vm": DECLARED, "timeout": 600}
    )
    a = cli.build_parser().parse_args(argv)
    assert (a.verb, a.foreground, a.pin) == ("up", True, True)
    assert a.state_dir == "/var/lib/agent-vm/agent-vm" and a.no_color and a.timeout == 600
    assert (a.branch, a.host_address, a.ssh_port, a.port) == (
        "feature/x",
        "127.0.0.1",
        2230,
        8030,
    )
    assert (a.memory_mib, a.cores, a.disk_size_mib, a.network) == (4096, 4, 20480, "none")
    assert a.ephemeral is False and a.user_module == "/nix/store/x-agent-guest.nix"


def test_declared_flags_map_both_ways(expr: Path) -> None:
    vm = DECLARED | {"ephemeral": True, "config": None, "network": "open"}
    argv = ev(expr, "upArgs", {"stateDir": "/s", "vm": vm})
    a = cli.build_parser().parse_args(argv)
    assert a.ephemeral is True and a.user_module is None and a.network == "open"
    assert a.timeout == 300  # the module's default readiness timeout
    assert "--config" not in argv and "--mcp-env" not in argv and a.mcp_env is None


def test_a_declared_mcp_environment_file_is_passed_as_a_host_path(expr: Path) -> None:
    """The file is read by the CLI when the unit starts: its path, never its
    content, is in the unit (and so in the store)."""
    vm = DECLARED | {"mcpEnvironmentFile": "/run/secrets/mcp.env"}
    a = cli.build_parser().parse_args(ev(expr, "upArgs", {"stateDir": "/s", "vm": vm}))
    assert a.mcp_env == "/run/secrets/mcp.env"


@pytest.mark.parametrize(
    ("allow", "expected"),
    [
        (["api.example.com", "*.github.com:8443"], ["api.example.com", "*.github.com:8443"]),
        ([], []),
    ],
)
def test_a_declared_allowlist_is_applied_exactly(
    expr: Path, allow: list[str], expected: list[str]
) -> None:
    vm = DECLARED | {"network": "allow", "allow": allow}
    a = cli.build_parser().parse_args(ev(expr, "upArgs", {"stateDir": "/s", "vm": vm}))
    assert a.network == "allow"
    assert commands._allowlist(a) == expected


def test_the_cli_refuses_a_value_out_of_its_range(expr: Path) -> None:
    """What the module's option types must keep out (they do:
    test_modules_eval compares their bounds with the CLI's)."""
    argv = ev(expr, "upArgs", {"stateDir": "/s", "vm": DECLARED | {"memory": 128}})
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(argv)


def test_the_checks_parameters_are_valid(tmp_path: Path) -> None:
    """The VMs nix flake check makes itself (nixos-tests/params.nix) pass the
    same validation as the CLI's files."""
    expr = write_expr(
        tmp_path,
        "check-params.nix",
        r"""
        { root }:
        let
          lib = import (/. + root + "/lib") { };
          params = import (/. + root + "/nixos-tests/params.nix");
        in
        map lib.validateParams [
          (params { name = "startup-shutdown"; stateDir = "/build/vm";
                    user = { uid = 1000; gid = 100; }; share = "9p"; network = "none"; })
          (params { name = "prebuilt"; stateDir = "/prebuilt";
                    user = { uid = 400; gid = 400; }; share = "virtiofs"; })
        ]
        """,
    )
    checked = evaluate_file(expr, root=str(ROOT))
    assert [p["name"] for p in checked] == ["startup-shutdown", "prebuilt"]
    assert checked[0]["workspace"]["hostPath"] == "/build/vm/workspace"


def _vm(address: str, ssh: int, agent: int) -> dict[str, Any]:
    return {"hostAddress": address, "sshPort": ssh, "agentPort": agent}


def test_port_clashes_between_declared_vms(expr: Path) -> None:
    """What the host module's assertion refuses: 0.0.0.0 binds every
    address, so it clashes with any address on the same port."""
    assert ev(expr, "portClashes", {}) == []
    apart = {"a": _vm("127.0.0.1", 2222, 8000), "b": _vm("127.0.0.1", 2223, 8001)}
    assert ev(expr, "portClashes", apart) == []
    # The same port on two different specific addresses is fine.
    two_addresses = {"a": _vm("127.0.0.1", 2222, 8000), "b": _vm("127.0.0.2", 2222, 8000)}
    assert ev(expr, "portClashes", two_addresses) == []
    wildcard = {"a": _vm("0.0.0.0", 2222, 8000), "b": _vm("127.0.0.1", 2222, 8001)}
    assert ev(expr, "portClashes", wildcard) == [
        "a's sshPort (0.0.0.0:2222) and b's sshPort (127.0.0.1:2222)"
    ]
    crossed = {"a": _vm("127.0.0.1", 2222, 8000), "b": _vm("0.0.0.0", 8000, 2223)}
    assert ev(expr, "portClashes", crossed) == [
        "a's agentPort (127.0.0.1:8000) and b's sshPort (0.0.0.0:8000)"
    ]
    same = {"a": _vm("10.0.0.1", 2222, 8000), "b": _vm("10.0.0.1", 2230, 8000)}
    assert ev(expr, "portClashes", same) == [
        "a's agentPort (10.0.0.1:8000) and b's agentPort (10.0.0.1:8000)"
    ]
    # One VM's own two ports.
    assert ev(expr, "portClashes", {"a": _vm("127.0.0.1", 2222, 2222)}) == [
        "a's sshPort (127.0.0.1:2222) and a's agentPort (127.0.0.1:2222)"
    ]
