"""The NixOS modules' options, evaluated with a stand-in lib
(tests/nix/stub-lib.nix): nixpkgs' conventions (a type, a description, an
example or default for every option) and the README documenting exactly
the options there are. A module's `config` is not evaluated here (that
needs nixpkgs: `nix flake check` does it)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from agent_vm import models
from module_options import MODULES, options
from nix_eval import ROOT

__all__ = ["options"]  # the fixture


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
    assert all(o["path"].startswith("agent-vm.egress.") for o in options["egress.nix"])
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
    "workspaceMode": "workspace_mode",
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
    # The allowlist is not a VmSettings field (a list with flags of its own).
    assert vm["allow"]["default"] == list(models.DEFAULT_ALLOW)
