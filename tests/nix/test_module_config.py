"""Single values of the modules' `config`, evaluated without nixpkgs: the
module is applied to a config of chosen option values and a stand-in lib
(tests/nix/stub-lib.nix, whose mkIf keeps or drops its value), and only
the attribute under test is forced. The full module evaluation is the
manual tests/nix/real-lib/ harness (real nixpkgs lib) and `nix flake check`."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from nix_eval import ROOT, evaluate_file, write_expr

STUB_LIB = Path(__file__).with_name("stub-lib.nix")

# The guest module's `config` is a mkMerge of blocks: with mkMerge as the
# identity, a value is found by the block's index and its attribute path.
EXPR = r"""
{ stubLib, module, config, path }:
let
  lib = import (/. + stubLib) { } // {
    mkIf = cond: value: if cond then value else null;
    mkMerge = blocks: blocks;
    mkDefault = value: value;
    optionals = cond: list: if cond then list else [ ];
    hasPrefix = p: s: builtins.substring 0 (builtins.stringLength p) s == p;
  };
  mod = import (/. + module) {
    inherit lib;
    config = builtins.fromJSON config;
    pkgs = throw "not needed for this value";
    utils = throw "not needed for this value";
    modulesPath = "/modules";
  };
  step = v: k: if builtins.isInt k then builtins.elemAt v k else v.${k};
in
builtins.foldl' step mod.config (builtins.fromJSON path)
"""


@pytest.fixture(scope="module")
def expr(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_expr(tmp_path_factory.mktemp("config"), "config.nix", EXPR)


def value(expr: Path, module: str, config: dict[str, Any], path: list[str | int]) -> Any:
    return evaluate_file(
        expr,
        stubLib=str(STUB_LIB),
        module=str(ROOT / "modules" / module),
        config=json.dumps(config),
        path=json.dumps(path),
    )


AGENT_UNIT = ["systemd", "services", "agent-vm-agent", "serviceConfig", "EnvironmentFile"]


def test_the_agents_environment_file_is_optional(expr: Path) -> None:
    """A missing file must not fail the agent unit ("-" prefix): `up`
    would wait its whole timeout for an agent that never starts."""
    agent = {"enable": True, "environmentFile": "/run/secrets/agent-vm-mcp.env"}
    got = value(expr, "agent-service.nix", {"agent-vm": {"agent": agent}}, AGENT_UNIT)
    assert got == "-/run/secrets/agent-vm-mcp.env"
    agent["environmentFile"] = None
    assert value(expr, "agent-service.nix", {"agent-vm": {"agent": agent}}, AGENT_UNIT) is None


def test_the_servers_user_is_made_whatever_its_name(expr: Path) -> None:
    """`agent-vm.agent.user` promises a system user made for the servers
    (its example is "mcp"): the module makes it under any name, not only
    the default's, or the unit's `Group` fails evaluation on a user that
    does not exist."""
    for name in ("agent-mcp", "mcp"):
        config = {
            "agent-vm": {"agent": {"enable": True, "user": name}},
            "users": {"users": {name: {"group": name, "home": f"/var/lib/{name}"}}},
        }
        user = value(expr, "agent-service.nix", config, ["users", "users", name])
        assert user == {
            "isSystemUser": True,
            "group": name,
            "home": f"/var/lib/{name}",
            "createHome": True,
        }
        assert value(expr, "agent-service.nix", config, ["users", "groups", name]) == {}
    # Declared otherwise (another group): no group of that name is made.
    config["users"]["users"]["mcp"]["group"] = "nogroup"
    assert value(expr, "agent-service.nix", config, ["users", "groups", "mcp"]) is None


def test_the_workspace_server_passes_the_check_its_build_runs() -> None:
    """agent-service.nix builds modules/agent/workspace_server.py with
    nixpkgs' writers.writePython3Bin, which runs flake8 over it and fails
    the build on any finding. It passes `--ignore` with the module's
    flakeIgnore, which replaces flake8's default ignore list (so W503 and
    W504 both apply): ruff's checks are not this one."""
    module = (ROOT / "modules" / "agent-service.nix").read_text()
    (ignore,) = re.findall(r"flakeIgnore = \[([^]]*)\]", module)
    codes = ",".join(re.findall(r'"(\w+)"', ignore))
    server = ROOT / "modules" / "agent" / "workspace_server.py"
    res = subprocess.run(
        [sys.executable, "-m", "flake8", "--show-source", "--ignore", codes, str(server)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert codes == "E501"
    assert res.returncode == 0, res.stdout + res.stderr


def guest_value(expr: Path, settings: dict[str, Any], path: list[str | int]) -> Any:
    agent_vm = {
        "workspace": {"share": "9p", "mode": "share", "tag": "workspace"},
        "resume": {"setClock": True},
    }
    for key, val in settings.items():
        agent_vm[key] = {**agent_vm.get(key, {}), **val}
    agent_vm["workspace"].setdefault("mountPoint", "/workspace")
    return value(expr, "guest.nix", {"agent-vm": agent_vm}, path)


def test_a_disk_workspace_is_mounted_from_its_own_disk(expr: Path) -> None:
    """The device is the runner's workspace disk (serial agent-vm-workspace,
    lib/qemu-args.nix); nothing is shared in."""
    fs = guest_value(
        expr,
        {"workspace": {"mode": "disk", "mountPoint": "/src"}},
        [1, "fileSystems", "/src"],
    )
    assert fs == {
        "device": "/dev/disk/by-id/virtio-agent-vm-workspace",
        "fsType": "ext4",
        "options": ["noatime", "nofail"],
    }
    share = guest_value(expr, {}, [1, "fileSystems", "/workspace"])
    assert (share["device"], share["fsType"]) == ("workspace", "9p")
    vfs = guest_value(expr, {"workspace": {"share": "virtiofs"}}, [1, "fileSystems", "/workspace"])
    assert (vfs["device"], vfs["fsType"]) == ("workspace", "virtiofs")


@pytest.mark.parametrize("on", [True, False])
def test_the_guest_agent_runs_for_the_clock_after_a_resume(expr: Path, on: bool) -> None:
    got = guest_value(expr, {"resume": {"setClock": on}}, [0, "services", "qemuGuest", "enable"])
    assert got is on
