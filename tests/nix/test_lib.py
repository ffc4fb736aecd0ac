"""The pure Nix runner library, evaluated with nix-instantiate and asserted.

Values reach Nix only through --argstr/--arg and JSON files, never by
splicing strings into Nix source (the same rule the product follows).
Nothing skips: without nix-instantiate these tests fail.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
LIB = ROOT / "lib"

EXPR = """
{ paramsFile, what, backing ? "", qemu ? "/fake/qemu", qemuImg ? "/fake/qemu-img" }:
let
  lib = import %s { };
  params = lib.readParams paramsFile;
  guest = {
    kernel = "/guest/vmlinuz";
    initrd = "/guest/initrd";
    cmdline = "root=/dev/vda";
  } // (if backing == "" then { } else { diskBackingFile = backing; });
  args = { inherit params guest; hostSystem = "x86_64-linux"; };
in
if what == "args" then lib.qemuArgs args
else lib.runnerScript (args // {
  inherit qemu qemuImg; shell = "/bin/sh";
})
"""


def nix_instantiate() -> str:
    path = shutil.which("nix-instantiate")
    if path is None:
        pytest.fail("nix-instantiate is missing: install nix-bin (./run-tests does)")
    return path


def params(tmp_path: Path, **over: Any) -> Path:
    state = str(over.pop("stateDir", tmp_path / "vm"))
    p: dict[str, Any] = {
        "version": 1,
        "name": "main-0123abcd",
        "branch": "main",
        "stateDir": state,
        "hostAddress": "127.0.0.1",
        "sshPort": 2222,
        "agentPort": 8000,
        "guestAgentPort": 8000,
        "memoryMiB": 1024,
        "cores": 2,
        "diskSizeMiB": 2048,
        "network": "open",
        "share": "9p",
        "workspace": {
            "hostPath": f"{state}/workspace",
            "tag": "workspace",
            "mountPoint": "/workspace",
            "securityModel": "none",
        },
        "user": {"name": "dev", "uid": 1000, "gid": 1000},
        "sshAuthorizedKeys": ["ssh-ed25519 AAAA test"],
        "userModule": None,
    } | over
    f = tmp_path / "params.json"
    f.write_text(json.dumps(p))
    return f


def evaluate(
    tmp_path: Path, what: str, params_file: Path, backing: str = "", fake: Path | None = None
) -> Any:
    expr = tmp_path / "expr.nix"
    expr.write_text(EXPR % LIB)
    res = subprocess.run(
        [
            nix_instantiate(),
            "--eval",
            "--strict",
            "--json",
            str(expr),
            "--arg",
            "paramsFile",
            str(params_file),
            "--argstr",
            "what",
            what,
            "--argstr",
            "backing",
            backing,
            *(
                [
                    "--argstr",
                    "qemu",
                    str(fake / "qemu"),
                    "--argstr",
                    "qemuImg",
                    str(fake / "qemu-img"),
                ]
                if fake
                else []
            ),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if res.returncode != 0:
        raise AssertionError(res.stderr)
    return json.loads(res.stdout)


def opt_after(args: list[str], flag: str) -> list[str]:
    return [args[i + 1] for i, a in enumerate(args) if a == flag]


def test_every_nix_file_parses() -> None:
    files = [p for p in ROOT.rglob("*.nix") if ".git" not in p.parts]
    assert any(p.parent == LIB for p in files)
    for f in files:
        res = subprocess.run(
            [nix_instantiate(), "--parse", str(f)], capture_output=True, text=True, check=False
        )
        assert res.returncode == 0, f"{f}: {res.stderr}"


def test_qemu_arguments(tmp_path: Path) -> None:
    args = evaluate(tmp_path, "args", params(tmp_path))
    state = tmp_path / "vm"
    assert opt_after(args, "-name") == ["main-0123abcd"]
    assert opt_after(args, "-m") == ["1024M"] and opt_after(args, "-smp") == ["2"]
    assert opt_after(args, "-pidfile") == [f"{state}/qemu.pid"]
    # Sockets are relative to the state dir (the runner's working directory).
    assert opt_after(args, "-qmp") == ["unix:qmp.sock,server=on,wait=off"]
    netdev = opt_after(args, "-netdev")[0]
    assert "hostfwd=tcp:127.0.0.1:2222-:22" in netdev
    assert "hostfwd=tcp:127.0.0.1:8000-:8000" in netdev
    assert "restrict=on" not in netdev
    assert opt_after(args, "-kernel") == ["/guest/vmlinuz"]
    assert opt_after(args, "-append")[0].startswith("console=ttyS0 root=/dev/vda")
    fsdev = opt_after(args, "-fsdev")[0]
    assert f"path={state}/workspace" in fsdev and "security_model=none" in fsdev
    fw = opt_after(args, "-fw_cfg")
    assert (
        f"name=opt/io.systemd.credentials/agent-vm.ssh-host-key,file={state}/ssh/ssh_host_ed25519_key"
        in fw
    )
    assert "-accel" not in args  # chosen by the runner at run time


def test_network_none_restricts_and_keeps_forwards(tmp_path: Path) -> None:
    netdev = opt_after(evaluate(tmp_path, "args", params(tmp_path, network="none")), "-netdev")[0]
    assert "restrict=on" in netdev and "hostfwd=tcp:127.0.0.1:2222-:22" in netdev


def test_commas_in_paths_are_escaped_for_qemu(tmp_path: Path) -> None:
    state = tmp_path / "a,b c"
    args = evaluate(tmp_path, "args", params(tmp_path, stateDir=str(state)))
    fsdev = opt_after(args, "-fsdev")[0]
    assert f"path={tmp_path}/a,,b c/workspace" in fsdev
    assert opt_after(args, "-pidfile") == [f"{state}/qemu.pid"]  # not a QemuOpts value


def test_virtiofs_share(tmp_path: Path) -> None:
    args = evaluate(tmp_path, "args", params(tmp_path, share="virtiofs"))
    devices = opt_after(args, "-device")
    assert any(d.startswith("vhost-user-fs-pci") and "tag=workspace" in d for d in devices)
    assert any("memory-backend-memfd" in o and "share=on" in o for o in opt_after(args, "-object"))
    assert not opt_after(args, "-fsdev")


@pytest.mark.parametrize(
    ("bad", "words"),
    [
        ({"version": 2}, "version"),
        ({"sshPort": 0}, "ports must be"),
        ({"agentPort": 2222}, "must differ"),
        ({"stateDir": "relative/dir"}, "absolute"),
        ({"network": "bridge"}, "network"),
    ],
)
def test_bad_params_are_clear_errors(tmp_path: Path, bad: dict[str, Any], words: str) -> None:
    with pytest.raises(AssertionError) as exc:
        evaluate(tmp_path, "args", params(tmp_path, **bad))
    assert "agent-vm params" in str(exc.value) and words in str(exc.value)


def run_runner(tmp_path: Path, state: Path, backing: str = "", accel: str = "") -> list[str]:
    """Run the generated script for real with a fake qemu and qemu-img."""
    fake = tmp_path / "fake"
    script = evaluate(tmp_path, "script", params(tmp_path, stateDir=str(state)), backing, fake)
    fake.mkdir(exist_ok=True)
    log = tmp_path / "argv"
    for name in ("qemu", "qemu-img"):
        (fake / name).write_text(
            f'#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a"; done > "{log}.{name}"\n'
            'if [ "$1" = create ]; then for a; do last="$a"; done; '
            '[ -n "$2" ] && : > "$(pwd)/disk.qcow2.tmp"; fi\n'
        )
        (fake / name).chmod(0o755)
    runner = tmp_path / "run-agent-vm"
    runner.write_text(script)
    runner.chmod(0o755)
    state.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, AGENT_VM_ACCEL=accel) if accel else dict(os.environ)
    res = subprocess.run([str(runner)], capture_output=True, text=True, env=env, check=False)
    assert res.returncode == 0, res.stderr
    return Path(f"{log}.qemu").read_text().splitlines()


def test_runner_script_execs_qemu_with_the_arguments(tmp_path: Path) -> None:
    state = tmp_path / "st ate,x"
    argv = run_runner(tmp_path, state, accel="tcg")
    expected = evaluate(tmp_path, "args", params(tmp_path, stateDir=str(state)))
    assert argv == [*expected, "-accel", "tcg"]
    assert (state / "disk.qcow2").exists()
    img = Path(f"{tmp_path}/argv.qemu-img").read_text().splitlines()
    assert img[:4] == ["create", "-q", "-f", "qcow2"] and img[-1] == "2048M"


def test_runner_overlays_a_backing_image_and_rejects_bad_accel(tmp_path: Path) -> None:
    state = tmp_path / "vm"
    run_runner(tmp_path, state, backing="/guest/root.raw", accel="kvm")
    img = Path(f"{tmp_path}/argv.qemu-img").read_text().splitlines()
    assert img[4:8] == ["-b", "/guest/root.raw", "-F", "raw"]
    script = evaluate(tmp_path, "script", params(tmp_path, stateDir=str(state)))
    assert 'case "$accel" in' in script and "AGENT_VM_ACCEL must be auto, kvm or tcg" in script
