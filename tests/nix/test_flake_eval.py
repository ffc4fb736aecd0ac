"""flake.nix's outputs, evaluated with a stub nixpkgs (tests/nix/stub-nixpkgs.nix):
the output schema, the attribute the CLI builds (pinned against
`agent_vm.nixbuild`), the path from a parameters file through
`lib.mkBranchVM` to the runner, and the hand-written flake.lock."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from agent_vm import nixbuild
from module_options import options
from nix_eval import ROOT, NixError, contract_example, nix_instantiate, write_expr

__all__ = ["options"]  # the fixture

STUB = Path(__file__).with_name("stub-nixpkgs.nix")
SYSTEMS = ["aarch64-linux", "x86_64-linux"]

EXPR = r"""
{ root, stub, what }:
let
  flake = import (/. + root + "/flake.nix");
  nixpkgs = import (/. + stub) { };
  self = flake.outputs { inherit self nixpkgs; } // { outPath = root; };
  names = builtins.mapAttrs (_: v: if builtins.isAttrs v then builtins.attrNames v else null);
  runner = self.legacyPackages.x86_64-linux.agent-vm-runner;
  hostModule = self.nixosModules.host {
    lib.mkDefault = x: x;
    pkgs.stdenv.hostPlatform.system = "x86_64-linux";
  };
in
{
  outputs = names (builtins.removeAttrs self [ "outPath" ]);
  perSystem = builtins.mapAttrs (_: names) {
    inherit (self) packages apps legacyPackages devShells checks;
  };
  inputs = flake.inputs;
  libNames = builtins.attrNames self.lib;
  mkBranchVMIsAFunction = builtins.isFunction self.lib.mkBranchVM;
  runnerText = runner.text;
  runnerName = runner.name;
  modulesGiven = runner.nixos.modulesGiven;
  guestModule = toString self.nixosModules.guest;
  hostModule = {
    imports = map toString hostModule.imports;
    package = hostModule.programs.agent-vm.package;
  };
  app = self.apps.x86_64-linux.agent-vm.program;
  # What the NixOS tests' machine (nixos-tests/common.nix) for a user
  # 1000:100 has in its store.
  testMachinePaths =
    let
      pkgs = nixpkgs.legacyPackages.x86_64-linux // {
        lib = {
          inherit (builtins) concatMap filter;
          mkForce = x: x;
        };
        stdenvNoCC = "/stub/stdenv";
        curl = "/stub/curl";
        git = "/stub/git";
        jq = "/stub/jq";
      };
      common = import (/. + root + "/nixos-tests/common.nix") { inherit pkgs self nixpkgs; };
    in
    ((common.machine { guests = [ { uid = 1000; gid = 100; } ]; }) {
      config.system.nixos.release = "25.11";
    }).virtualisation.additionalPaths;
}.${what}
"""


@pytest.fixture(scope="module")
def expr(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_expr(tmp_path_factory.mktemp("flake"), "flake-eval.nix", EXPR)


def ev(expr: Path, what: str, params: Path | None = None) -> Any:
    env = {k: v for k, v in os.environ.items() if k != "AGENT_VM_PARAMS"}
    if params is not None:
        env["AGENT_VM_PARAMS"] = str(params)
    argv = [nix_instantiate(), "--eval", "--strict", "--json", str(expr)]
    argv += ["--argstr", "root", str(ROOT), "--argstr", "stub", str(STUB)]
    argv += ["--argstr", "what", what]
    res = subprocess.run(argv, capture_output=True, text=True, check=False, env=env)
    if res.returncode != 0:
        raise NixError(res.stderr)
    return json.loads(res.stdout)


def test_the_flake_has_the_outputs_the_brief_names(expr: Path) -> None:
    outputs = ev(expr, "outputs")
    assert set(outputs) == {
        "lib",
        "nixosModules",
        "packages",
        "apps",
        "legacyPackages",
        "devShells",
        "formatter",
        "checks",
    }
    assert sorted(outputs["nixosModules"]) == ["default", "guest", "host"]
    for output in ("packages", "apps", "legacyPackages", "devShells", "formatter", "checks"):
        assert sorted(outputs[output]) == SYSTEMS, output
    per = ev(expr, "perSystem")
    for system in SYSTEMS:
        assert sorted(per["packages"][system]) == ["agent-vm", "default"]
        assert sorted(per["apps"][system]) == ["agent-vm", "default"]
        assert per["legacyPackages"][system] == ["agent-vm-runner"]
        assert per["devShells"][system] == ["default"]
        assert sorted(per["checks"][system]) == [
            "cli",
            "host-module",
            "python-tests",
            "startup-shutdown",
            "startup-shutdown-tcg",
        ]
    assert ev(expr, "mkBranchVMIsAFunction") is True
    assert {"mkBranchVM", "mkRunner", "readParams", "qemuArgs"} <= set(ev(expr, "libNames"))


@pytest.mark.parametrize("system", SYSTEMS)
def test_the_cli_builds_an_attribute_the_flake_has(expr: Path, system: str) -> None:
    """The pin between the Python side and the flake: `nixbuild.build_argv`'s
    installable names an attribute these outputs answer."""
    argv = nixbuild.build_argv("path:/some/flake", system, Path("/vm/runner"))
    installable = argv[-1]
    flake, attr = installable.split("#")
    assert flake == "path:/some/flake"
    output, sys_name, name = attr.split(".")
    assert (output, sys_name) == ("legacyPackages", system)
    assert name in ev(expr, "perSystem")[output][system]
    assert "--impure" in argv  # the attribute reads $AGENT_VM_PARAMS


def test_without_a_parameters_file_the_runner_says_who_builds_it(expr: Path) -> None:
    with pytest.raises(NixError, match="agent-vm-runner is built by the agent-vm CLI"):
        ev(expr, "runnerText")


def _params(tmp_path: Path, **over: Any) -> Path:
    p = contract_example() | over
    f = tmp_path / "params.json"
    f.write_text(json.dumps(p))
    return f


def test_a_parameters_file_becomes_a_runner(expr: Path, tmp_path: Path) -> None:
    params = _params(tmp_path)
    text = ev(expr, "runnerText", params)
    assert ev(expr, "runnerName", params) == "run-agent-vm"
    assert text.startswith("#!/stub/bash\n")
    name = "feature-x-1a2b3c4d"
    assert re.search(rf"^exec '/stub/qemu/bin/qemu-system-x86_64' '-name' '{name}' ", text, re.M)
    assert "'-kernel' '/stub/kernel/bzImage' '-initrd' '/stub/initrd/initrd'" in text
    assert (
        "'-append' 'console=ttyS0 init=/stub/toplevel/init 8250.nr_uarts=1"
        f" regInfo=/stub/reginfo/registration systemd.hostname={name}"
        " agent_vm.agent_hosts=127.0.0.1:8000,localhost:8000'"
    ) in text
    assert "id=store,file=/stub/store.erofs,if=none,format=raw,readonly=on" in text
    # The guest configuration's agent port is the forward's target.
    assert "hostfwd=tcp:127.0.0.1:8000-:8123" in text
    assert "'/stub/e2fsprogs/bin/mkfs.ext4' -q -F -L agent-vm-root" in text


def test_an_allow_runner_starts_this_flakes_engine_and_relays_through_socat(
    expr: Path, tmp_path: Path
) -> None:
    text = ev(expr, "runnerText", _params(tmp_path, network="allow"))
    engine = f"{ROOT / 'python' / 'package.nix'}/bin/agent-vm-egress"
    assert f"'{engine}' '/home/u/.local/state/agent-vm/vms/feature-x-1a2b3c4d'" in text
    assert "guestfwd=tcp:10.0.2.100:3128-cmd:/stub/socat/bin/socat FD:0,,shut-down" in text


def test_the_guest_gets_the_guest_module_and_the_shared_settings(
    expr: Path, tmp_path: Path
) -> None:
    modules = ev(expr, "modulesGiven", _params(tmp_path))
    assert modules[0] == ev(expr, "guestModule") == str(ROOT / "modules" / "guest.nix")
    assert modules[1] == {
        "_file": "agent-vm's parameters file (lib/mk-branch-vm.nix)",
        "nixpkgs": {"hostPlatform": "x86_64-linux"},
        "agent-vm": {
            "user": {"name": "dev", "uid": 1000, "gid": 1000},
            "workspace": {
                "share": "9p",
                "mode": "share",
                "tag": "workspace",
                "mountPoint": {"_type": "override", "priority": 1000, "content": "/workspace"},
            },
        },
    }
    assert len(modules) == 2


def _definitions(value: Any, path: str) -> list[tuple[str, Any]]:
    """The option definitions in a module's attribute set, by option path."""
    if isinstance(value, dict) and "_type" not in value:
        return [d for k, v in value.items() for d in _definitions(v, f"{path}.{k}")]
    return [(path, value)]


def test_what_the_cli_sets_in_the_guest_never_conflicts_with_a_users_module(
    expr: Path, tmp_path: Path, options: dict[str, list[dict[str, Any]]]
) -> None:
    """A --config module may set every documented option; were the CLI's
    setting of one at normal priority, the two would be "conflicting
    definition values". So each of the CLI's settings is either a default
    (mkDefault: the user's module wins) or an internal option's (the CLI's
    alone, left out of the README)."""
    cli = ev(expr, "modulesGiven", _params(tmp_path))[1]
    internal = {o["path"] for o in options["guest.nix"] if o["internal"]}
    settable = {o["path"] for o in options["guest.nix"] if not (o["internal"] or o["readOnly"])}
    defs = _definitions(cli["agent-vm"], "agent-vm")
    assert defs
    for path, value in defs:
        assert path in internal | settable, f"{path}: no such option"
        if path in settable:
            assert isinstance(value, dict) and value.get("_type") == "override", path
            assert value["priority"] == 1000, path  # mkDefault
        else:
            assert not isinstance(value, dict), path
    assert internal >= {
        "agent-vm.user.name",
        "agent-vm.user.uid",
        "agent-vm.user.gid",
        "agent-vm.workspace.share",
        "agent-vm.workspace.tag",
    }


def test_the_users_config_module_is_imported(expr: Path, tmp_path: Path) -> None:
    user_module = tmp_path / "agent guest.nix"
    user_module.write_text("{ ... }: { }\n")
    modules = ev(expr, "modulesGiven", _params(tmp_path, userModule=str(user_module)))
    assert modules[2:] == [str(user_module)]


def test_a_bad_parameters_file_fails_at_evaluation(expr: Path, tmp_path: Path) -> None:
    with pytest.raises(NixError, match="agent-vm params: hostAddress must be an IPv4 address"):
        ev(expr, "runnerText", _params(tmp_path, hostAddress=""))


def test_the_host_module_brings_this_flakes_package(expr: Path) -> None:
    host = ev(expr, "hostModule")
    assert host["imports"] == [str(ROOT / "modules" / "host.nix")]
    assert host["package"]["calledPackage"] == str(ROOT / "python" / "package.nix")
    assert host["package"]["flakeInputs"] == ["/stub/nixpkgs"]
    assert ev(expr, "app") == f"{ROOT / 'python' / 'package.nix'}/bin/agent-vm"


def test_flake_lock_pins_nixos_25_11() -> None:
    lock = json.loads((ROOT / "flake.lock").read_text())
    assert lock["version"] == 7 and lock["root"] == "root"
    assert lock["nodes"]["root"] == {"inputs": {"nixpkgs": "nixpkgs"}}
    node = lock["nodes"]["nixpkgs"]
    assert node["original"] == {
        "owner": "NixOS",
        "ref": "nixos-25.11",
        "repo": "nixpkgs",
        "type": "github",
    }
    locked = node["locked"]
    assert locked["type"] == "github" and (locked["owner"], locked["repo"]) == ("NixOS", "nixpkgs")
    assert re.fullmatch(r"[0-9a-f]{40}", locked["rev"])
    assert re.fullmatch(r"sha256-[A-Za-z0-9+/]{43}=", locked["narHash"])
    assert isinstance(locked["lastModified"], int)


def test_flake_inputs_match_the_lock(expr: Path) -> None:
    assert ev(expr, "inputs") == {"nixpkgs": {"url": "github:NixOS/nixpkgs/nixos-25.11"}}


def test_the_offline_test_machine_has_every_guest_path_it_boots(expr: Path) -> None:
    """The NixOS tests' machine has no network: what the runner boots (kernel,
    initrd, store image) and what its command line names (the system's
    toplevel and its registration) must be in its store from the start."""
    paths = ev(expr, "testMachinePaths")
    assert paths[:4] == ["/stub/nixpkgs", str(ROOT), "/stub/stdenv", "/stub/socat"]
    assert sorted(paths[4:]) == sorted(
        [
            "/stub/kernel/bzImage",
            "/stub/initrd/initrd",
            "/stub/toplevel",
            "/stub/reginfo",
            "/stub/store.erofs",
        ]
    )
