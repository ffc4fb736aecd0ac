"""The egress side of the pure lib: a `network = "allow"` VM's QEMU
arguments (restrict=on and exactly one guestfwd, to the relay; the CA and
environment as fw_cfg credentials; no secret anywhere) and the runner lines
that start the engine before QEMU. Also: the file names agree with
agent_vm.egress.layout, which the CLI and the engine use."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import pytest
from agent_vm.egress import engine, layout
from agent_vm.egress.layout import EgressPaths
from nix_eval import LIB, NixError, contract_example, evaluate_file, write_expr

EXPR = r"""
{ libDir, paramsJson, egressJson, what }:
let
  lib = import (/. + libDir) { };
  params = lib.validateParams (builtins.fromJSON paramsJson);
  egress = builtins.fromJSON egressJson;
  args = {
    inherit params;
    guest = { kernel = "/k"; initrd = "/i"; cmdline = "root=/dev/vda"; };
  } // (if egress == null then { } else { inherit egress; });
in
{
  args = lib.qemuArgs args;
  script = lib.runnerScript (args // { qemu = "/q"; qemuImg = "/qi"; });
  egress = lib.egress // { files = lib.egress.files params.stateDir; };
}.${what}
"""

PROGRAMS = {
    "relay": "/nix/store/x-socat/bin/socat",
    "engine": "/nix/store/y-agent-vm/bin/agent-vm-egress",
}


@pytest.fixture(scope="module")
def expr(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_expr(tmp_path_factory.mktemp("egress"), "egress.nix", EXPR)


def ev(expr: Path, what: str, network: str = "allow", egress: Any = PROGRAMS) -> Any:
    params = contract_example() | {"network": network, "stateDir": "/home/u/state/vms/main-1"}
    return evaluate_file(
        expr,
        libDir=str(LIB),
        paramsJson=json.dumps(params),
        egressJson=json.dumps(egress),
        what=what,
    )


def netdev(args: list[str]) -> list[str]:
    """The -netdev options, split as QEMU does (a doubled comma is a comma)."""
    raw = args[args.index("-netdev") + 1]
    return [o.replace("\0", ",") for o in raw.replace(",,", "\0").split(",")]


def test_allow_is_restrict_on_plus_exactly_one_guestfwd_to_the_relay(expr: Path) -> None:
    args = ev(expr, "args")
    options = netdev(args)
    assert "restrict=on" in options
    guestfwds = [o for o in options if o.startswith("guestfwd=")]
    assert guestfwds == [
        "guestfwd=tcp:10.0.2.100:3128-cmd:"
        "/nix/store/x-socat/bin/socat FD:0,shut-down UNIX-CONNECT:egress/proxy.sock"
    ]
    # The forwards still bind the explicit host address.
    assert all(o.startswith("hostfwd=tcp:127.0.0.1:") for o in options if "hostfwd" in o)
    assert sum(a.count("guestfwd") for a in args) == 1


def test_allow_hands_the_guest_the_ca_and_the_environment(expr: Path) -> None:
    args = ev(expr, "args")
    fw = [args[i + 1] for i, a in enumerate(args) if a == "-fw_cfg"]
    paths = EgressPaths(Path("/home/u/state/vms/main-1"))
    assert f"name=opt/io.systemd.credentials/agent-vm.egress-ca,file={paths.ca_cert}" in fw
    assert f"name=opt/io.systemd.credentials/agent-vm.egress-env,file={paths.guest_env}" in fw


@pytest.mark.parametrize("network", ["open", "none"])
def test_other_modes_have_no_proxy(expr: Path, network: str) -> None:
    args = ev(expr, "args", network=network, egress=None)
    assert "guestfwd" not in " ".join(args) and "egress" not in " ".join(args)
    assert ("restrict=on" in netdev(args)) is (network == "none")
    assert "agent-vm-egress" not in ev(expr, "script", network=network, egress=None)


def test_allow_without_the_programs_is_a_clear_error(expr: Path) -> None:
    with pytest.raises(NixError, match=r"needs egress\.relay and egress\.engine"):
        ev(expr, "args", egress=None)


def test_no_secret_reaches_the_command_line(expr: Path) -> None:
    """QEMU's command line is world-readable (/proc/PID/cmdline): the guest's
    credentials are files QEMU reads, never inline values, and nothing
    names where stored secret values live."""
    args = ev(expr, "args")
    fw = [args[i + 1] for i, a in enumerate(args) if a == "-fw_cfg"]
    assert fw and all(",file=/" in f and "string=" not in f for f in fw)
    text = json.dumps(args) + ev(expr, "script")
    assert "egress/secrets" not in text and "placeholder" not in text


def test_the_runner_starts_the_engine_before_qemu_and_waits_for_its_socket(expr: Path) -> None:
    script = ev(expr, "script")
    start = script.index("/nix/store/y-agent-vm/bin/agent-vm-egress")
    assert start < script.index("exec '/q' '-name'")  # the VM's QEMU, not --kvm-probe's
    assert "while [ ! -S egress/proxy.sock ]" in script
    line = next(ln for ln in script.splitlines() if "agent-vm-egress" in ln)
    # Its command line: the program and the VM directory, nothing else; the
    # runner names itself, so a runner killed while the engine starts is
    # noticed (procs.die_with_parent).
    assert shlex.split(line.split(">>")[0]) == [
        f"{engine.PARENT_ENV}=$$",
        "/nix/store/y-agent-vm/bin/agent-vm-egress",
        "/home/u/state/vms/main-1",
    ]


def test_the_names_agree_with_the_python_side(expr: Path) -> None:
    e = ev(expr, "egress")
    paths = EgressPaths(Path("/home/u/state/vms/main-1"))
    assert (e["guestAddress"], e["guestPort"]) == (
        layout.GUEST_PROXY_ADDRESS,
        layout.GUEST_PROXY_PORT,
    )
    assert e["socket"] == layout.SOCKET_NAME
    assert Path("/home/u/state/vms/main-1") / e["socket"] == paths.socket
    assert e["files"]["caCert"] == str(paths.ca_cert)
    assert e["files"]["guestEnv"] == str(paths.guest_env)
    assert all(len(c) <= 28 for c in e["credentials"].values())
