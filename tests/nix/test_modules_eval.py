"""The NixOS modules' options, evaluated with a stand-in lib
(tests/nix/stub-lib.nix): nixpkgs' conventions (a type, a description, an
example or default for every option) and the README documenting exactly
the options there are. A module's `config` is not evaluated here (that
needs nixpkgs: `nix flake check` does it)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from agent_vm import models
from nix_eval import ROOT, evaluate_file, write_expr

STUB_LIB = Path(__file__).with_name("stub-lib.nix")
MODULES = ["guest.nix", "agent-service.nix", "host.nix"]

EXPR = r"""
{ stubLib, module }:
let
  lib = import (/. + stubLib) { };
  mod = import (/. + module) {
    inherit lib;
    config = throw "options must not depend on config";
    pkgs = throw "options must not need pkgs";
    utils = throw "options must not need utils";
    modulesPath = "/modules";
  };
  describe = path: opt: {
    path = builtins.concatStringsSep "." path;
    type = opt.type.name or null;
    # What the type lets through, where the stub records it.
    bounds = if opt.type ? lo then [ opt.type.lo opt.type.hi ] else null;
    pattern = opt.type.re or null;
    description = opt.description or null;
    hasExample = opt ? example;
    hasDefault = opt ? default || opt ? defaultText;
    # The default's value where it is plain data (not a package or a
    # value computed from config).
    default =
      let r = builtins.tryEval (builtins.toJSON (opt.default or null)); in
      if opt ? default && r.success then builtins.fromJSON r.value else null;
    internal = opt.internal or false;
    readOnly = opt.readOnly or false;
  };
  # Options inside a submodule, wherever the submodule sits in the type.
  subOptions = t:
    if t.name or null == "submodule" then t.options
    else if t ? elem then subOptions t.elem
    else null;
  walk = prefix: attrs:
    builtins.concatMap (n:
      let v = attrs.${n}; path = prefix ++ [ n ]; in
      if (v._type or null) == "option" then
        let sub = subOptions v.type; in
        [ (describe path v) ]
        ++ (if sub == null then [ ] else walk (path ++ [ "<name>" ]) sub)
      else if builtins.isAttrs v then walk path v
      else [ ]
    ) (builtins.attrNames attrs);
in
walk [ ] (mod.options or { })
"""


@pytest.fixture(scope="module")
def options(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    expr = write_expr(tmp_path_factory.mktemp("modules"), "options.nix", EXPR)
    return {
        m: evaluate_file(expr, stubLib=str(STUB_LIB), module=str(ROOT / "modules" / m))
        for m in MODULES
    }


@pytest.mark.parametrize("module", MODULES)
def test_every_option_has_a_type_a_description_and_an_example_or_default(
    options: dict[str, list[dict[str, Any]]], module: str
) -> None:
    opts = options[module]
    assert opts, f"{module} declares no options"
    for o in opts:
        assert o["type"], f"{o['path']}: no type"
        assert isinstance(o["description"], str) and len(o["description"]) > 10, o["path"]
        if not (o["internal"] or o["readOnly"]):
            assert o["hasExample"] or o["hasDefault"], f"{o['path']}: no example or default"
        # nixpkgs style: a sentence, not a dangling phrase.
        assert o["description"].rstrip().endswith((".", ")", ":")), o["path"]


def test_the_namespaces(options: dict[str, list[dict[str, Any]]]) -> None:
    assert all(o["path"].startswith("agent-vm.") for o in options["guest.nix"])
    assert all(o["path"].startswith("agent-vm.agent.") for o in options["agent-service.nix"])
    host = {o["path"].split(".")[0] + "." + o["path"].split(".")[1] for o in options["host.nix"]}
    assert host == {"programs.agent-vm", "services.agent-vm"}
    enable = next(o for o in options["host.nix"] if o["path"] == "programs.agent-vm.enable")
    assert enable["description"].startswith("Whether to enable the agent-vm command")


def test_the_readme_lists_exactly_the_options_there_are(
    options: dict[str, list[dict[str, Any]]],
) -> None:
    documented = set(
        re.findall(r"^\| `([a-z][\w.<>-]+)` \|", (ROOT / "README.md").read_text(), re.M)
    )
    declared = {o["path"] for opts in options.values() for o in opts if not o["internal"]}
    assert declared - documented == set(), "options missing from the README"
    assert documented - declared == set(), "the README lists options that do not exist"


def test_declared_vm_values_are_what_the_cli_accepts(
    options: dict[str, list[dict[str, Any]]],
) -> None:
    """A declaration the CLI would refuse fails at evaluation (NixOS checks
    the option types), not when its unit starts."""
    vm = {
        o["path"].removeprefix("services.agent-vm.vms.<name>."): o
        for o in options["host.nix"]
        if o["path"].startswith("services.agent-vm.vms.<name>.")
    }
    for option, allowed in (
        ("sshPort", models.PORT_RANGE),
        ("agentPort", models.PORT_RANGE),
        ("memory", models.MEMORY_MIB_RANGE),
        ("cores", models.CORES_RANGE),
        ("diskSize", models.DISK_MIB_RANGE),
    ):
        assert vm[option]["bounds"] == list(allowed), option
    host = re.compile(vm["hostAddress"]["pattern"])
    for address in (
        *("127.0.0.1", "10.1.2.3", "255.255.255.255", "0.0.0.0"),
        *("localhost", "::1", "127.0.0.1,x", "", "999.1.1.1", "01.2.3.4", "1.2.3"),
    ):
        try:
            models.check_host(address)
            accepted = True
        except ValueError:
            accepted = False
        assert bool(host.fullmatch(address)) == accepted, address


# The declared-VM options that are VmSettings, by the name each has there.
HOST_OPTION_SETTING = {
    "hostAddress": "host_address",
    "memory": "memory_mib",
    "cores": "cores",
    "diskSize": "disk_size_mib",
    "network": "network",
    "ephemeral": "ephemeral",
    "config": "user_module",
}


def test_declared_vm_defaults_are_the_cli_defaults(
    options: dict[str, list[dict[str, Any]]],
) -> None:
    """One set of defaults: a declared VM gets what `agent-vm create` gives."""
    vm = {
        o["path"].removeprefix("services.agent-vm.vms.<name>."): o
        for o in options["host.nix"]
        if o["path"].startswith("services.agent-vm.vms.<name>.")
    }
    for option, field_name in HOST_OPTION_SETTING.items():
        default = models.VmSettings.model_fields[field_name].default
        assert vm[option]["default"] == default, option
    assert set(HOST_OPTION_SETTING.values()) == set(models.VmSettings.model_fields)
