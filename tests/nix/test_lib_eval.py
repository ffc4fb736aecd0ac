"""The pure Nix runner library (lib/), evaluated with
`nix-instantiate --eval --strict --json` and asserted; the runner script it
generates is run for real with a fake qemu, qemu-img and virtiofsd.

Every value reaches Nix through --argstr (paths, JSON, hostile strings),
never spliced into Nix source: the same rule the product follows. Nothing
skips: without nix-instantiate these tests fail.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from nix_eval import LIB, ROOT, NixError, contract_example, evaluate_file, nix_instantiate

# One expression; `what` picks the attribute (the rest stays unevaluated).
EXPR = r"""
{ libDir, what, paramsFile ? "", guestJson ? "{}", system ? "x86_64-linux",
  qemu ? "/fake/qemu", qemuImg ? "/fake/qemu-img", virtiofsd ? "", mkfsExt4 ? "",
  str ? "" }:
let
  lib = import (/. + libDir) { };
  params = lib.readParams paramsFile;
  guest = {
    kernel = "/guest/vmlinuz";
    initrd = "/guest/initrd";
    cmdline = "root=/dev/vda";
  } // builtins.fromJSON guestJson;
  args = { inherit params guest; hostSystem = system; };
  scriptArgs = args // { inherit qemu qemuImg; shell = "/bin/sh"; }
    // (if virtiofsd == "" then { } else { inherit virtiofsd; })
    // (if mkfsExt4 == "" then { } else { inherit mkfsExt4; });
in
{
  inherit params;
  args = lib.qemuArgs args;
  probeArgs = lib.kvmProbeArgs { inherit guest; hostSystem = system; };
  script = lib.runnerScript scriptArgs;
  runner = lib.mkRunner (scriptArgs // { writeScriptBin = name: text: { inherit name text; }; });
  escapeShellArg = lib.escapeShellArg str;
  escapeShellArgs = lib.escapeShellArgs (builtins.fromJSON str);
  escapeQemuOpt = lib.escapeQemuOpt str;
  qemuOpts = lib.qemuOpts "head" (builtins.fromJSON str);
  statePaths = lib.statePaths str;
  storeDir = builtins.storeDir;
  credentials = lib.credentials;
  guestAgentChannel = lib.guestAgentChannel;
  shares = lib.shares { inherit params guest; };
  supportedVersion = lib.supportedVersion;
}.${what}
"""


@pytest.fixture(scope="module")
def expr_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    f = tmp_path_factory.mktemp("expr") / "expr.nix"
    f.write_text(EXPR)
    return f


def evaluate(expr: Path, what: str, **argstrs: str) -> Any:
    return evaluate_file(expr, libDir=str(LIB), what=what, **argstrs)


def params(state_dir: Path | str, **over: Any) -> dict[str, Any]:
    state = str(state_dir)
    return {
        "version": 2,
        "name": "main-0123abcd",
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
        "userModule": None,
    } | over


def write_params(tmp_path: Path, p: dict[str, Any]) -> str:
    f = tmp_path / "params.json"
    f.write_text(json.dumps(p))
    return str(f)


def qemu_args(expr: Path, tmp_path: Path, p: dict[str, Any], **argstrs: str) -> list[str]:
    result: list[str] = evaluate(expr, "args", paramsFile=write_params(tmp_path, p), **argstrs)
    return result


def opt_after(args: list[str], flag: str) -> list[str]:
    return [args[i + 1] for i, a in enumerate(args) if a == flag]


# --- parsing and readParams ----------------------------------------------------------


def test_every_lib_file_parses() -> None:
    files = sorted(LIB.glob("*.nix"))
    assert {f.name for f in files} >= {
        "default.nix",
        "params.nix",
        "qemu-args.nix",
        "runner-script.nix",
        "strings.nix",
    }
    for f in files:
        res = subprocess.run(
            [nix_instantiate(), "--parse", str(f)], capture_output=True, text=True, check=False
        )
        assert res.returncode == 0, f"{f}: {res.stderr}"


def test_every_nix_file_in_the_repository_parses() -> None:
    files = [p for p in ROOT.rglob("*.nix") if ".git" not in p.parts]
    res = subprocess.run(
        [nix_instantiate(), "--parse", *map(str, files)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert res.returncode == 0, res.stderr


def test_read_params_accepts_the_contract_example(expr_file: Path, tmp_path: Path) -> None:
    example = contract_example()
    got = evaluate(expr_file, "params", paramsFile=write_params(tmp_path, example))
    assert got == example
    assert evaluate(expr_file, "supportedVersion") == example["version"] == 2


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"version": 1}, "agent-vm params: unsupported version 1"),
        ({"sshPort": 0}, "agent-vm params: ports must be 1-65535"),
        ({"sshPort": 70000}, "agent-vm params: ports must be 1-65535"),
        ({"agentPort": "8000"}, "agent-vm params: ports must be 1-65535"),
        ({"guestAgentPort": -1}, "agent-vm params: ports must be 1-65535"),
        ({"agentPort": 2222}, "agent-vm params: sshPort and agentPort must differ"),
        ({"stateDir": "relative/dir"}, "agent-vm params: stateDir must be absolute"),
        ({"network": "bridge"}, 'agent-vm params: network must be "open", "none" or "allow"'),
        ({"share": "nfs"}, 'agent-vm params: share must be "9p" or "virtiofs"'),
        ({"memoryMiB": 64}, "agent-vm params: memoryMiB >= 128 and cores >= 1 required"),
        ({"cores": 0}, "agent-vm params: memoryMiB >= 128 and cores >= 1 required"),
        ({"name": "../x"}, "agent-vm params: invalid name '../x'"),
    ],
)
def test_read_params_refuses_bad_values_clearly(
    expr_file: Path, tmp_path: Path, bad: dict[str, Any], message: str
) -> None:
    with pytest.raises(NixError) as exc:
        evaluate(expr_file, "params", paramsFile=write_params(tmp_path, params("/s") | bad))
    assert message in str(exc.value)


def test_read_params_names_missing_keys(expr_file: Path, tmp_path: Path) -> None:
    p = params("/s")
    del p["sshPort"], p["workspace"]
    with pytest.raises(NixError, match="agent-vm params: missing keys: sshPort, workspace"):
        evaluate(expr_file, "params", paramsFile=write_params(tmp_path, p))


@pytest.mark.parametrize(
    "host", ["", "127.0.0.1,hostfwd=tcp::9999-:22", "localhost", "256.0.0.1", "::1", 2130706433]
)
def test_read_params_refuses_a_bad_host_address(
    expr_file: Path, tmp_path: Path, host: object
) -> None:
    with pytest.raises(NixError, match=r"agent-vm params: .*hostAddress"):
        evaluate(
            expr_file, "params", paramsFile=write_params(tmp_path, params("/s", hostAddress=host))
        )


# --- qemuArgs -------------------------------------------------------------------------------


def test_qemu_arguments(expr_file: Path, tmp_path: Path) -> None:
    state = tmp_path / "vm"
    args = qemu_args(expr_file, tmp_path, params(state))
    assert opt_after(args, "-name") == ["main-0123abcd"]
    assert opt_after(args, "-m") == ["1024M"]
    assert opt_after(args, "-smp") == ["2"]
    assert opt_after(args, "-pidfile") == [f"{state}/qemu.pid"]
    # Sockets are relative to the state dir, the runner's working directory
    # (a unix socket path holds at most 107 bytes).
    assert opt_after(args, "-qmp") == ["unix:qmp.sock,server=on,wait=off"]
    assert opt_after(args, "-chardev")[0] == (
        f"socket,id=console,path=console.sock,server=on,wait=off,"
        f"logfile={state}/serial.log,logappend=off"
    )
    assert opt_after(args, "-serial") == ["chardev:console"]
    assert opt_after(args, "-kernel") == ["/guest/vmlinuz"]
    assert opt_after(args, "-initrd") == ["/guest/initrd"]
    assert opt_after(args, "-append") == [
        "console=ttyS0 root=/dev/vda systemd.hostname=main-0123abcd"
        " agent_vm.agent_hosts=127.0.0.1:8000,localhost:8000"
    ]
    # No SATA, SMBus, VMware port or PS/2 controller: nothing the guest uses.
    assert opt_after(args, "-machine") == [
        "q35,sata=off,smbus=off,vmport=off,i8042=off,memory-backend=mem"
    ]
    assert opt_after(args, "-cpu") == ["max"]
    assert "-nodefaults" in args and "-no-user-config" in args
    assert opt_after(args, "-display") == ["none"]
    assert "-accel" not in args and "-enable-kvm" not in args  # the runner picks it


def test_forwards_are_bound_to_the_host_address(expr_file: Path, tmp_path: Path) -> None:
    args = qemu_args(expr_file, tmp_path, params(tmp_path, sshPort=2345, agentPort=8123))
    (netdev,) = opt_after(args, "-netdev")
    assert netdev == (
        "user,id=net0,hostfwd=tcp:127.0.0.1:2345-:22,hostfwd=tcp:127.0.0.1:8123-:8000"
    )
    assert "restrict" not in netdev
    assert "virtio-net-pci,netdev=net0" in opt_after(args, "-device")
    # Every forward names its host address: none starts with "tcp::".
    assert "hostfwd=tcp::" not in netdev
    other = qemu_args(
        expr_file, tmp_path, params(tmp_path, hostAddress="10.1.2.3", guestAgentPort=3000)
    )
    assert "hostfwd=tcp:10.1.2.3:8000-:3000" in opt_after(other, "-netdev")[0]


@pytest.mark.parametrize(
    ("address", "hosts"),
    [
        ("127.0.0.1", "127.0.0.1:8123,localhost:8123"),
        # A client on the host reaches a specific address by that address.
        ("10.1.2.3", "127.0.0.1:8123,localhost:8123,10.1.2.3:8123"),
        ("127.0.0.2", "127.0.0.1:8123,localhost:8123,127.0.0.2:8123"),
        # Every interface: no one name to accept beyond the loopback ones.
        ("0.0.0.0", "127.0.0.1:8123,localhost:8123"),
    ],
)
def test_the_guest_learns_the_host_names_of_its_agent_port(
    expr_file: Path, tmp_path: Path, address: str, hosts: str
) -> None:
    """The Host header check (DNS rebinding) needs the host-side port, which
    differs per VM: it travels on the kernel command line, not in the closure."""
    args = qemu_args(expr_file, tmp_path, params(tmp_path, hostAddress=address, agentPort=8123))
    (append,) = opt_after(args, "-append")
    assert append.split()[-1] == f"agent_vm.agent_hosts={hosts}"


def test_network_none_is_restrict_on(expr_file: Path, tmp_path: Path) -> None:
    args = qemu_args(expr_file, tmp_path, params(tmp_path, network="none"))
    (netdev,) = opt_after(args, "-netdev")
    assert netdev.startswith("user,id=net0,restrict=on,")
    assert "hostfwd=tcp:127.0.0.1:2222-:22" in netdev  # forwards still work


@pytest.mark.parametrize("model", ["none", "mapped-xattr"])
def test_9p_share(expr_file: Path, tmp_path: Path, model: str) -> None:
    state = tmp_path / "vm"
    p = params(state)
    p["workspace"]["securityModel"] = model
    args = qemu_args(expr_file, tmp_path, p)
    assert opt_after(args, "-fsdev") == [
        f"local,id=fs-workspace,path={state}/workspace,security_model={model}"
    ]
    assert "virtio-9p-pci,fsdev=fs-workspace,mount_tag=workspace" in opt_after(args, "-device")
    assert not any("vhost-user-fs" in a for a in args)


def test_virtiofs_share(expr_file: Path, tmp_path: Path) -> None:
    args = qemu_args(expr_file, tmp_path, params(tmp_path, share="virtiofs", memoryMiB=3072))
    # vhost-user needs the guest's RAM shared: the file backend is.
    assert opt_after(args, "-object") == [
        f"memory-backend-file,id=mem,size=3072M,mem-path={tmp_path}/memory.ram,share=on"
    ]
    assert "socket,id=fs-workspace,path=virtiofs-workspace.sock" in opt_after(args, "-chardev")
    assert "vhost-user-fs-pci,chardev=fs-workspace,tag=workspace" in opt_after(args, "-device")
    assert not opt_after(args, "-fsdev")


def test_credential_names_fit_fw_cfg(expr_file: Path) -> None:
    """QEMU caps fw_cfg names at 55 bytes; systemd's prefix takes 27."""
    names = evaluate(expr_file, "credentials")
    assert names == {
        "sshHostKey": "agent-vm.ssh-host-key",
        "authorizedKeys": "agent-vm.authorized-keys",
        "agentToken": "agent-vm.agent-token",
        "mcpSecrets": "agent-vm.mcp-secrets",
    }
    assert all(len(f"opt/io.systemd.credentials/{n}") <= 55 for n in names.values())
    # systemd's own limit for a credential name passed this way.
    assert all(len(n) <= 28 for n in names.values())


def test_disks_and_credentials(expr_file: Path, tmp_path: Path) -> None:
    state = tmp_path / "vm"
    args = qemu_args(
        expr_file, tmp_path, params(state), guestJson=json.dumps({"storeImage": "/guest/store.img"})
    )
    drives = opt_after(args, "-drive")
    assert drives == [
        "id=store,file=/guest/store.img,if=none,format=raw,readonly=on",
        f"id=disk,file={state}/disk.qcow2,if=none,format=qcow2,discard=unmap",
    ]
    devices = opt_after(args, "-device")
    assert devices.index("virtio-blk-pci,drive=store,serial=agent-vm-store") < devices.index(
        "virtio-blk-pci,drive=disk,serial=agent-vm-disk"
    )
    assert opt_after(args, "-fw_cfg") == [
        f"name=opt/io.systemd.credentials/agent-vm.ssh-host-key,file={state}/ssh/ssh_host_ed25519_key",
        f"name=opt/io.systemd.credentials/agent-vm.authorized-keys,file={state}/ssh/id_ed25519.pub",
        f"name=opt/io.systemd.credentials/agent-vm.agent-token,file={state}/secrets/agent-token",
        f"name=opt/io.systemd.credentials/agent-vm.mcp-secrets,file={state}/secrets/mcp.env",
    ]
    # Without a store image there is one disk.
    assert len(opt_after(qemu_args(expr_file, tmp_path, params(state)), "-drive")) == 1


def test_the_runner_names_the_secret_files_but_never_reads_them(
    expr_file: Path, tmp_path: Path
) -> None:
    """The token and the MCP secrets reach QEMU by path at run time: their
    content is in nothing Nix evaluates (the QEMU arguments, the runner's
    text, the runner derivation)."""
    state = tmp_path / "vm"
    (state / "secrets").mkdir(parents=True)
    token = "5e" * 32
    (state / "secrets" / "agent-token").write_text(token + "\n")
    (state / "secrets" / "mcp.env").write_text("API_TOKEN=s3cret-in-the-file\n")
    pf = write_params(tmp_path, params(state))
    evaluated = json.dumps(
        [evaluate(expr_file, what, paramsFile=pf) for what in ("args", "script", "runner")]
    )
    assert f"file={state}/secrets/agent-token" in evaluated
    assert f"file={state}/secrets/mcp.env" in evaluated
    assert token not in evaluated and "s3cret-in-the-file" not in evaluated


def test_extra_args_and_aarch64(expr_file: Path, tmp_path: Path) -> None:
    args = qemu_args(
        expr_file,
        tmp_path,
        params(tmp_path),
        guestJson=json.dumps({"extraQemuArgs": ["-device", "x"]}),
        system="aarch64-linux",
    )
    assert args[-2:] == ["-device", "x"]
    # GICv3-only hosts refuse virt's default GICv2 under KVM.
    assert opt_after(args, "-machine") == ["virt,gic-version=max,memory-backend=mem"]
    assert opt_after(args, "-append") == [
        "console=ttyAMA0 root=/dev/vda systemd.hostname=main-0123abcd"
        " agent_vm.agent_hosts=127.0.0.1:8000,localhost:8000"
    ]
    with pytest.raises(NixError, match=r"agent-vm: unsupported system riscv64-linux"):
        qemu_args(expr_file, tmp_path, params(tmp_path), system="riscv64-linux")


def test_commas_in_the_state_dir_are_doubled_in_qemu_options(
    expr_file: Path, tmp_path: Path
) -> None:
    state = tmp_path / "a,b c"
    esc = f"{tmp_path}/a,,b c"
    args = qemu_args(expr_file, tmp_path, params(state))
    assert opt_after(args, "-fsdev") == [
        f"local,id=fs-workspace,path={esc}/workspace,security_model=none"
    ]
    assert f"id=disk,file={esc}/disk.qcow2,if=none,format=qcow2,discard=unmap" in opt_after(
        args, "-drive"
    )
    assert opt_after(args, "-chardev")[0].endswith(f"logfile={esc}/serial.log,logappend=off")
    assert all(
        f"file={esc}/ssh/" in o or f"file={esc}/secrets/" in o for o in opt_after(args, "-fw_cfg")
    )
    # -pidfile takes a plain file name, not a QemuOpts list: no doubling.
    assert opt_after(args, "-pidfile") == [f"{state}/qemu.pid"]


# --- quoting helpers ---------------------------------------------------------------------------

HOSTILE = [
    "",
    "plain",
    "it's",
    "a b",
    "$(touch pwned)",
    "`touch pwned`",
    "${HOME}",
    '"double"',
    "back\\slash",
    "new\nline",
    "*",
    "-n",
    "é ünï",
    "'; rm -rf / #",
    "''",
]


@pytest.mark.parametrize("s", HOSTILE)
def test_escape_shell_arg_round_trips_through_sh(expr_file: Path, tmp_path: Path, s: str) -> None:
    quoted = evaluate(expr_file, "escapeShellArg", str=s)
    assert quoted.startswith("'") and quoted.endswith("'")
    res = subprocess.run(
        ["sh", "-c", f"printf %s {quoted}"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=True,
    )
    assert res.stdout == s
    assert not (tmp_path / "pwned").exists()


def test_escape_shell_args_keeps_words(expr_file: Path, tmp_path: Path) -> None:
    words = evaluate(expr_file, "escapeShellArgs", str=json.dumps(HOSTILE))
    res = subprocess.run(
        ["sh", "-c", f'for a in {words}; do printf "%s\\0" "$a"; done'],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=True,
    )
    assert res.stdout.split("\0")[:-1] == HOSTILE


@pytest.mark.parametrize(
    ("s", "escaped"),
    [("/a,b", "/a,,b"), (",,", ",,,,"), ("no-comma", "no-comma"), ("a=b c", "a=b c"), ("", "")],
)
def test_escape_qemu_opt(expr_file: Path, s: str, escaped: str) -> None:
    assert evaluate(expr_file, "escapeQemuOpt", str=s) == escaped


def test_qemu_opts_skips_nulls_and_escapes(expr_file: Path) -> None:
    pairs = [
        {"name": "id", "value": "x"},
        {"name": "skip", "value": None},
        {"name": "path", "value": "/a,b"},
    ]
    assert evaluate(expr_file, "qemuOpts", str=json.dumps(pairs)) == "head,id=x,path=/a,,b"


def test_state_paths(expr_file: Path) -> None:
    assert evaluate(expr_file, "statePaths", str="/s") == {
        "disk": "/s/disk.qcow2",
        "workspaceDisk": "/s/workspace.qcow2",
        "memoryFile": "/s/memory.ram",
        "guestAgentSocket": "qga.sock",
        "pidFile": "/s/qemu.pid",
        "qmpSocket": "qmp.sock",
        "consoleSocket": "console.sock",
        "serialLog": "/s/serial.log",
        "hostKey": "/s/ssh/ssh_host_ed25519_key",
        "authorizedKeys": "/s/ssh/id_ed25519.pub",
        "agentToken": "/s/secrets/agent-token",
        "mcpSecrets": "/s/secrets/mcp.env",
    }


# --- runnerScript: the text ------------------------------------------------------------------


def test_runner_script_text(expr_file: Path, tmp_path: Path) -> None:
    state = tmp_path / "vm"
    script = evaluate(
        expr_file,
        "script",
        paramsFile=write_params(tmp_path, params(state)),
        qemu="/nix/store/q/bin/qemu-system-x86_64",
        qemuImg="/nix/store/q/bin/qemu-img",
    )
    assert script.startswith("#!/bin/sh\n")
    assert "set -eu" in script and "umask 077" in script
    assert f"cd '{state}'" in script
    assert re.search(
        r"^exec '/nix/store/q/bin/qemu-system-x86_64' '-name' 'main-0123abcd' ", script, re.M
    )
    assert '"$@"' in script.splitlines()[-1] or '"$@"' in script
    assert "'/nix/store/q/bin/qemu-img' create -q -f qcow2 \"$disk.tmp\" 2048M" in script
    assert 'accel="${AGENT_VM_ACCEL:-auto}"' in script
    for case in ("auto)", "kvm) set -- -accel kvm ;;", "tcg) set -- -accel tcg ;;"):
        assert case in script
    assert "set -- -accel kvm -accel tcg" in script
    assert "AGENT_VM_ACCEL must be auto, kvm or tcg" in script


def test_runner_script_with_a_backing_file(expr_file: Path, tmp_path: Path) -> None:
    script = evaluate(
        expr_file,
        "script",
        paramsFile=write_params(tmp_path, params(tmp_path / "vm")),
        guestJson=json.dumps({"diskBackingFile": "/guest/root.raw"}),
    )
    assert "'/fake/qemu-img' create -q -f qcow2 -b '/guest/root.raw' -F raw \"$disk.tmp\"" in script


def test_virtiofs_needs_a_virtiofsd(expr_file: Path, tmp_path: Path) -> None:
    with pytest.raises(NixError, match="share = virtiofs needs a virtiofsd"):
        evaluate(
            expr_file,
            "script",
            paramsFile=write_params(tmp_path, params(tmp_path, share="virtiofs")),
        )


def test_mk_runner_uses_the_given_write_script_bin(expr_file: Path, tmp_path: Path) -> None:
    pf = write_params(tmp_path, params(tmp_path / "vm"))
    runner = evaluate(expr_file, "runner", paramsFile=pf)
    assert runner == {"name": "run-agent-vm", "text": evaluate(expr_file, "script", paramsFile=pf)}


# --- runnerScript: run for real -----------------------------------------------------------------


def make_fakes(tmp_path: Path) -> Path:
    """Fake qemu / qemu-img / virtiofsd in a directory whose name needs quoting;
    each records its argv (one per line), cwd and pid in $FAKE_LOG (virtiofsd
    under its socket's name: one runs per share)."""
    fake = tmp_path / "fake bin's"
    fake.mkdir()
    (fake / "qemu").write_text(
        "#!/bin/sh\n"
        'printf "%s\\n" "$@" > "$FAKE_LOG/qemu.argv"\n'
        'pwd > "$FAKE_LOG/qemu.cwd"\n'
        'echo $$ > "$FAKE_LOG/qemu.pid"\n'
        '[ -z "${FAKE_QEMU_SLEEP:-}" ] || exec sleep "$FAKE_QEMU_SLEEP"\n'
        'exit "${FAKE_QEMU_EXIT:-0}"\n'
    )
    (fake / "qemu-img").write_text(
        "#!/bin/sh\n"
        # `info`: the size an existing disk has ($FAKE_DISK_BYTES, else 2 GiB).
        'if [ "$1" = info ]; then\n'
        '  echo "virtual size: X (${FAKE_DISK_BYTES:-2147483648} bytes)"; exit\n'
        "fi\n"
        'printf "%s\\n" "$@" > "$FAKE_LOG/qemu-img.argv"\n'
        'for a; do case "$a" in *.tmp) : > "$a" ;; esac; done\n'
    )
    (fake / "virtiofsd").write_text(
        f"#!{sys.executable}\n"
        "import os, socket, sys, time\n"
        "log = os.environ['FAKE_LOG']\n"
        "path = [a.split('=', 1)[1] for a in sys.argv if a.startswith('--socket-path=')][0]\n"
        "open(f'{log}/{path}.argv', 'w').write('\\n'.join(sys.argv[1:]) + '\\n')\n"
        "open(f'{log}/{path}.pid', 'w').write(str(os.getpid()))\n"
        "time.sleep(float(os.environ.get('FAKE_VIRTIOFSD_DELAY', '0')))\n"
        "s = socket.socket(socket.AF_UNIX)\n"
        "s.bind(path)\n"
        "s.listen()\n"
        "time.sleep(float(os.environ.get('FAKE_VIRTIOFSD_LIFETIME', '30')))\n"
    )
    for f in fake.iterdir():
        f.chmod(0o755)
    return fake


def run_runner(
    expr: Path,
    tmp_path: Path,
    p: dict[str, Any],
    accel: str | None = None,
    guest: dict[str, Any] | None = None,
    virtiofsd: bool = False,
    real_disk_tools: bool = False,
    extra_env: dict[str, str] | None = None,
    args: tuple[str, ...] = (),
) -> tuple[subprocess.CompletedProcess[str], Path, int]:
    """Generate the runner for `p`, run it to its end with the fakes (or the
    real qemu-img and mkfs.ext4); (result, log dir, pid)."""
    proc, log = start_runner(
        expr, tmp_path, p, accel, guest, virtiofsd, real_disk_tools, extra_env, args
    )
    out, err = proc.communicate(timeout=30)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err), log, proc.pid


def start_runner(
    expr: Path,
    tmp_path: Path,
    p: dict[str, Any],
    accel: str | None = None,
    guest: dict[str, Any] | None = None,
    virtiofsd: bool = False,
    real_disk_tools: bool = False,
    extra_env: dict[str, str] | None = None,
    args: tuple[str, ...] = (),
) -> tuple[subprocess.Popen[str], Path]:
    """Generate the runner for `p` and start it; (process, log dir)."""
    fake = tmp_path / "fake bin's"
    if not fake.exists():
        make_fakes(tmp_path)
    disk_tools = (
        {"qemuImg": _which("qemu-img"), "mkfsExt4": _which("mkfs.ext4")}
        if real_disk_tools
        else {"qemuImg": str(fake / "qemu-img")}
    )
    script = evaluate(
        expr,
        "script",
        paramsFile=write_params(tmp_path, p),
        guestJson=json.dumps(guest or {}),
        qemu=str(fake / "qemu"),
        **disk_tools,
        **({"virtiofsd": str(fake / "virtiofsd")} if virtiofsd else {}),
    )
    runner = tmp_path / "run-agent-vm"
    runner.write_text(script)
    runner.chmod(0o755)
    log = tmp_path / "log"
    shutil.rmtree(log, ignore_errors=True)
    log.mkdir()
    Path(p["stateDir"]).mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "AGENT_VM_ACCEL"} | {"FAKE_LOG": str(log)}
    env |= extra_env or {}
    if accel is not None:
        env["AGENT_VM_ACCEL"] = accel
    proc = subprocess.Popen(
        [str(runner), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    return proc, log


HOSTILE_STATE = "st ate,x'q$(touch pwned)"


def test_runner_execs_qemu_with_the_evaluated_arguments(expr_file: Path, tmp_path: Path) -> None:
    state = tmp_path / HOSTILE_STATE
    p = params(state)
    res, log, pid = run_runner(expr_file, tmp_path, p, accel="tcg")
    assert res.returncode == 0, res.stderr
    expected = qemu_args(expr_file, tmp_path, p)
    assert (log / "qemu.argv").read_text().splitlines() == [*expected, "-accel", "tcg"]
    # exec: QEMU has the runner's pid (what the CLI records), in the state dir.
    assert int((log / "qemu.pid").read_text()) == pid
    assert (log / "qemu.cwd").read_text().strip() == str(state)
    # The disk was made in the state dir, private, with the requested size.
    assert (state / "disk.qcow2").is_file() and not (state / "disk.qcow2.tmp").exists()
    assert stat.S_IMODE((state / "disk.qcow2").stat().st_mode) == 0o600
    assert (log / "qemu-img.argv").read_text().splitlines() == [
        "create",
        "-q",
        "-f",
        "qcow2",
        f"{state}/disk.qcow2.tmp",
        "2048M",
    ]
    assert not list(tmp_path.rglob("pwned"))


def test_runner_keeps_an_existing_disk_and_clears_stale_sockets(
    expr_file: Path, tmp_path: Path
) -> None:
    state = tmp_path / "vm"
    state.mkdir()
    (state / "disk.qcow2").write_text("guest data")
    for stale in ("qmp.sock", "console.sock", "qemu.pid", "virtiofs-workspace.sock"):
        (state / stale).write_text("")
    res, log, _ = run_runner(expr_file, tmp_path, params(state), accel="kvm")
    assert res.returncode == 0, res.stderr
    assert not (log / "qemu-img.argv").exists()  # not recreated
    assert (state / "disk.qcow2").read_text() == "guest data"
    assert sorted(p.name for p in state.iterdir()) == ["disk.qcow2"]
    assert (log / "qemu.argv").read_text().splitlines()[-2:] == ["-accel", "kvm"]


def test_runner_overlays_a_backing_image(expr_file: Path, tmp_path: Path) -> None:
    state = tmp_path / "vm"
    res, log, _ = run_runner(
        expr_file, tmp_path, params(state), accel="tcg", guest={"diskBackingFile": "/g/root,1.raw"}
    )
    assert res.returncode == 0, res.stderr
    assert (log / "qemu-img.argv").read_text().splitlines() == [
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        "/g/root,1.raw",
        "-F",
        "raw",
        f"{state}/disk.qcow2.tmp",
    ]


def test_runner_accelerator_choice(expr_file: Path, tmp_path: Path) -> None:
    p = params(tmp_path / "vm")
    kvm_ok = os.access("/dev/kvm", os.R_OK | os.W_OK)
    for accel, tail in (
        ("tcg", ["-accel", "tcg"]),
        ("kvm", ["-accel", "kvm"]),
        ("auto", ["-accel", "kvm", "-accel", "tcg"] if kvm_ok else ["-accel", "tcg"]),
        (None, ["-accel", "kvm", "-accel", "tcg"] if kvm_ok else ["-accel", "tcg"]),
    ):
        res, log, _ = run_runner(expr_file, tmp_path, p, accel=accel)
        assert res.returncode == 0, res.stderr
        argv = (log / "qemu.argv").read_text().splitlines()
        assert argv[-len(tail) :] == tail, accel
        assert argv[-len(tail) - 1] != "-accel"


def test_runner_refuses_an_unknown_accelerator(expr_file: Path, tmp_path: Path) -> None:
    res, log, _ = run_runner(expr_file, tmp_path, params(tmp_path / "vm"), accel="hvf")
    assert res.returncode == 2
    assert res.stderr == "run-agent-vm: AGENT_VM_ACCEL must be auto, kvm or tcg, not 'hvf'\n"
    assert not (log / "qemu.argv").exists()


def test_runner_reports_qemus_exit_code(expr_file: Path, tmp_path: Path) -> None:
    os.environ["FAKE_QEMU_EXIT"] = "3"
    try:
        res, _, _ = run_runner(expr_file, tmp_path, params(tmp_path / "vm"), accel="tcg")
    finally:
        del os.environ["FAKE_QEMU_EXIT"]
    assert res.returncode == 3


def test_runner_with_virtiofs(expr_file: Path, tmp_path: Path) -> None:
    state = tmp_path / "st ate,v"
    p = params(state, share="virtiofs")
    res, log, pid = run_runner(expr_file, tmp_path, p, accel="tcg", virtiofsd=True)
    assert res.returncode == 0, res.stderr
    vfs_argv = (log / "virtiofs-workspace.sock.argv").read_text().splitlines()
    uid, gid = os.getuid(), os.getgid()
    expected = [
        "--socket-path=virtiofs-workspace.sock",
        f"--shared-dir={state}/workspace",
        "--sandbox=namespace" if uid == 0 else "--sandbox=none",
    ]
    if (uid, gid) != (1000, 1000):
        expected += [f"--translate-uid=map:1000:{uid}:1", f"--translate-gid=map:1000:{gid}:1"]
    assert vfs_argv == expected
    qemu_argv = (log / "qemu.argv").read_text().splitlines()
    assert qemu_argv == [*qemu_args(expr_file, tmp_path, p), "-accel", "tcg"]
    # The runner stays QEMU's parent (no exec) and stops virtiofsd on exit.
    assert int((log / "qemu.pid").read_text()) != pid
    vfs_pid = int((log / "virtiofs-workspace.sock.pid").read_text())
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _alive(vfs_pid):
        time.sleep(0.05)
    assert not _alive(vfs_pid)


def test_a_virtiofsd_that_dies_takes_qemu_down(expr_file: Path, tmp_path: Path) -> None:
    """Without its virtiofsd the guest's share would hang: the runner stops
    QEMU, so the VM is seen as failed (and restarted by a supervisor)."""
    state = tmp_path / "vm"
    t0 = time.monotonic()
    res, log, _ = run_runner(
        expr_file,
        tmp_path,
        params(state, share="virtiofs"),
        accel="tcg",
        virtiofsd=True,
        extra_env={"FAKE_QEMU_SLEEP": "60", "FAKE_VIRTIOFSD_LIFETIME": "0.5"},
    )
    assert time.monotonic() - t0 < 15
    assert res.returncode == 1
    vfs_pid = int((log / "virtiofs-workspace.sock.pid").read_text())
    assert f"run-agent-vm: virtiofsd (pid {vfs_pid}) exited; stopping QEMU" in res.stderr
    assert not _alive(int((log / "qemu.pid").read_text()))


def test_signals_reach_qemu_through_the_supervising_runner(expr_file: Path, tmp_path: Path) -> None:
    """SIGTERM to the runner (what the CLI's stop escalates to) ends QEMU and
    virtiofsd, and the runner reports QEMU's status."""
    p = params(tmp_path / "vm", share="virtiofs")
    proc, log = start_runner(
        expr_file, tmp_path, p, "tcg", virtiofsd=True, extra_env={"FAKE_QEMU_SLEEP": "60"}
    )
    deadline = time.monotonic() + 10
    while not (log / "qemu.pid").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    qemu = int((log / "qemu.pid").read_text())
    proc.terminate()
    assert proc.wait(timeout=10) == 143  # QEMU (sleep) died of SIGTERM
    assert not _alive(qemu)
    assert not _alive(int((log / "virtiofs-workspace.sock.pid").read_text()))
    assert proc.stderr is not None and "exited; stopping QEMU" not in proc.stderr.read()


def test_a_signal_before_qemu_starts_leaves_nothing_running(
    expr_file: Path, tmp_path: Path
) -> None:
    """SIGTERM while the runner still waits for virtiofsd: no QEMU is started
    afterwards and virtiofsd is stopped (a shell killed outright would leave
    both)."""
    p = params(tmp_path / "vm", share="virtiofs")
    proc, log = start_runner(
        expr_file, tmp_path, p, "tcg", virtiofsd=True, extra_env={"FAKE_VIRTIOFSD_DELAY": "2"}
    )
    pidfile = log / "virtiofs-workspace.sock.pid"
    deadline = time.monotonic() + 10
    while not pidfile.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.terminate()
    assert proc.wait(timeout=15) == 143
    assert not (log / "qemu.argv").exists()  # QEMU was never started
    vfs = int(pidfile.read_text())
    deadline = time.monotonic() + 10
    while _alive(vfs) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(vfs)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def _which(tool: str) -> str:
    path = shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin")
    if path is None:
        pytest.fail(f"{tool} is needed (./run-tests installs qemu-utils and e2fsprogs)")
    return path


def test_workspace_tag_is_checked(expr_file: Path, tmp_path: Path) -> None:
    for tag in ("nix-store", "Bad Tag", "", "a" * 32):
        p = params("/s")
        p["workspace"]["tag"] = tag
        with pytest.raises(NixError, match=r"agent-vm params: workspace\.tag must be"):
            evaluate(expr_file, "params", paramsFile=write_params(tmp_path, p))


@pytest.mark.parametrize("share", ["9p", "virtiofs"])
def test_the_host_store_share_is_read_only(expr_file: Path, tmp_path: Path, share: str) -> None:
    p = params(tmp_path / "vm", share=share)
    guest = json.dumps({"hostStore": True})
    shares = evaluate(expr_file, "shares", paramsFile=write_params(tmp_path, p), guestJson=guest)
    # The store of the Nix that evaluates: /nix/store here, a private one in
    # the flake's python-tests check (tests/nix/private-store.sh).
    store_dir = evaluate(expr_file, "storeDir")
    assert shares == [
        {
            "tag": "workspace",
            "hostPath": f"{tmp_path}/vm/workspace",
            "readOnly": False,
            "securityModel": "none",
        },
        {
            "tag": "nix-store",
            "hostPath": store_dir,
            "readOnly": True,
            "securityModel": "none",
        },
    ]
    args = qemu_args(expr_file, tmp_path, p, guestJson=guest)
    if share == "9p":
        assert (
            f"local,id=fs-nix-store,path={store_dir},security_model=none,readonly=on"
            in opt_after(args, "-fsdev")
        )
        assert "virtio-9p-pci,fsdev=fs-nix-store,mount_tag=nix-store" in opt_after(args, "-device")
    else:
        assert "socket,id=fs-nix-store,path=virtiofs-nix-store.sock" in opt_after(args, "-chardev")
        assert "vhost-user-fs-pci,chardev=fs-nix-store,tag=nix-store" in opt_after(args, "-device")
    # No store image with a host store, unless the guest brings both.
    assert not any("serial=agent-vm-store" in a for a in args)


def test_runner_starts_one_virtiofsd_per_share(expr_file: Path, tmp_path: Path) -> None:
    state = tmp_path / "vm"
    p = params(state, share="virtiofs")
    res, log, _ = run_runner(
        expr_file, tmp_path, p, accel="tcg", guest={"hostStore": True}, virtiofsd=True
    )
    assert res.returncode == 0, res.stderr
    store = (log / "virtiofs-nix-store.sock.argv").read_text().splitlines()
    sandbox = "--sandbox=namespace" if os.getuid() == 0 else "--sandbox=none"
    # Read-only, and no id translation: nothing is written through it.
    assert store == [
        "--socket-path=virtiofs-nix-store.sock",
        f"--shared-dir={evaluate(expr_file, 'storeDir')}",
        sandbox,
        "--readonly",
    ]
    assert (log / "virtiofs-workspace.sock.argv").exists()
    for pidfile in log.glob("*.sock.pid"):
        pid = int(pidfile.read_text())
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.05)
        assert not _alive(pid), pidfile.name


def test_runner_formats_a_new_root_disk_as_ext4(expr_file: Path, tmp_path: Path) -> None:
    """The NixOS guest's disk: made on the host with the real qemu-img and
    mkfs.ext4, before QEMU starts; the guest mounts it by its serial."""
    state = tmp_path / "vm"
    res, _, _ = run_runner(
        expr_file,
        tmp_path,
        params(state, diskSizeMiB=3072),
        accel="tcg",
        guest={"rootFormat": "ext4"},
        real_disk_tools=True,
    )
    assert res.returncode == 0, res.stderr
    disk = state / "disk.qcow2"
    assert sorted(p.name for p in state.iterdir()) == ["disk.qcow2"]  # no .raw/.tmp left
    assert stat.S_IMODE(disk.stat().st_mode) == 0o600
    info = json.loads(
        subprocess.run(
            [_which("qemu-img"), "info", "--output=json", str(disk)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    assert info["format"] == "qcow2" and info["virtual-size"] == 3072 * 1024 * 1024
    assert info["actual-size"] < 64 * 1024 * 1024  # sparse: only metadata written
    raw = tmp_path / "disk.raw"
    subprocess.run([_which("qemu-img"), "convert", "-O", "raw", str(disk), str(raw)], check=True)
    header = subprocess.run(
        [_which("dumpe2fs"), "-h", str(raw)], capture_output=True, text=True, check=True
    ).stdout
    assert re.search(r"^Filesystem volume name:\s+agent-vm-root$", header, re.M)
    assert re.search(r"^Filesystem OS type:\s+Linux$", header, re.M)
    # The file system's root belongs to root, whoever ran the runner.
    root_inode = subprocess.run(
        [_which("debugfs"), "-R", "stat /", str(raw)], capture_output=True, text=True, check=True
    ).stdout
    assert re.search(r"User:\s+0\s+Group:\s+0", root_inode)


def test_a_root_format_needs_its_tool_and_must_be_known(expr_file: Path, tmp_path: Path) -> None:
    pf = write_params(tmp_path, params(tmp_path / "vm"))
    with pytest.raises(NixError, match=r'guest\.rootFormat = "ext4" needs mkfsExt4'):
        evaluate(expr_file, "script", paramsFile=pf, guestJson='{"rootFormat": "ext4"}')
    with pytest.raises(NixError, match=r'unsupported guest\.rootFormat "xfs"'):
        evaluate(
            expr_file, "script", paramsFile=pf, guestJson='{"rootFormat": "xfs"}', mkfsExt4="/m"
        )


def test_runner_grows_a_smaller_disk_and_never_shrinks_one(expr_file: Path, tmp_path: Path) -> None:
    state = tmp_path / "vm"
    state.mkdir()
    (state / "disk.qcow2").write_text("guest data")
    res, log, _ = run_runner(
        expr_file,
        tmp_path,
        params(state, diskSizeMiB=3072),
        accel="tcg",
        extra_env={"FAKE_DISK_BYTES": str(1024 << 20)},
    )
    assert res.returncode == 0, res.stderr
    assert (log / "qemu-img.argv").read_text().splitlines() == [
        "resize",
        "-q",
        "-f",
        "qcow2",
        f"{state}/disk.qcow2",
        "3072M",
    ]
    assert res.stderr == "run-agent-vm: disk grown from 1024M to 3072M\n"
    for bigger in (3072 << 20, 4096 << 20):
        res, log, _ = run_runner(
            expr_file,
            tmp_path,
            params(state, diskSizeMiB=3072),
            accel="tcg",
            extra_env={"FAKE_DISK_BYTES": str(bigger)},
        )
        assert res.returncode == 0 and res.stderr == "", res.stderr
        assert not (log / "qemu-img.argv").exists()
    assert (state / "disk.qcow2").read_text() == "guest data"


def test_runner_grows_a_real_disk(expr_file: Path, tmp_path: Path) -> None:
    """`update --disk-size` then start: the existing qcow2 has the new size
    and keeps its file system (the guest grows that at boot)."""
    state = tmp_path / "vm"
    for size in (1024, 2048):
        res, _, _ = run_runner(
            expr_file,
            tmp_path,
            params(state, diskSizeMiB=size),
            accel="tcg",
            guest={"rootFormat": "ext4"},
            real_disk_tools=True,
        )
        assert res.returncode == 0, res.stderr
    assert res.stderr == "run-agent-vm: disk grown from 1024M to 2048M\n"
    info = json.loads(
        subprocess.run(
            [_which("qemu-img"), "info", "--output=json", str(state / "disk.qcow2")],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    assert info["virtual-size"] == 2048 << 20
    raw = tmp_path / "disk.raw"
    subprocess.run(
        [_which("qemu-img"), "convert", "-O", "raw", str(state / "disk.qcow2"), str(raw)],
        check=True,
    )
    header = subprocess.run(
        [_which("dumpe2fs"), "-h", str(raw)], capture_output=True, text=True, check=True
    ).stdout
    assert re.search(r"^Filesystem volume name:\s+agent-vm-root$", header, re.M)


def test_kvm_probe_arguments(expr_file: Path) -> None:
    """The VM's own kernel, alone: no initrd, disk, network or share, so it
    panics looking for its root, and -no-reboot ends QEMU there."""
    args = evaluate(expr_file, "probeArgs")
    assert opt_after(args, "-kernel") == ["/guest/vmlinuz"]
    assert opt_after(args, "-append") == ["console=ttyS0 panic=-1"]
    assert opt_after(args, "-serial") == ["stdio"]
    assert opt_after(args, "-machine") == ["q35,sata=off,smbus=off,vmport=off,i8042=off"]
    assert opt_after(args, "-cpu") == ["max"]
    assert "-no-reboot" in args and "-nodefaults" in args
    for absent in ("-initrd", "-drive", "-netdev", "-fsdev", "-accel", "-qmp", "-pidfile"):
        assert absent not in args, absent
    aarch64 = evaluate(expr_file, "probeArgs", system="aarch64-linux")
    assert opt_after(aarch64, "-append") == ["console=ttyAMA0 panic=-1"]


def test_runner_kvm_probe_mode_touches_nothing(expr_file: Path, tmp_path: Path) -> None:
    state = tmp_path / "vm"
    res, log, pid = run_runner(
        expr_file, tmp_path, params(state), accel="tcg", args=("--kvm-probe",)
    )
    assert res.returncode == 0, res.stderr
    probe = evaluate(expr_file, "probeArgs")
    assert (log / "qemu.argv").read_text().splitlines() == ["-accel", "kvm", *probe]
    assert int((log / "qemu.pid").read_text()) == pid  # exec'd
    assert list(state.iterdir()) == []  # no disk made, no socket removed
    assert not (log / "qemu-img.argv").exists()


# --- suspend/resume and the workspace disk ---------------------------------------------------


def test_guest_ram_is_a_shared_file_in_the_state_dir(expr_file: Path, tmp_path: Path) -> None:
    """A suspend saves only device state (x-ignore-shared) because the RAM
    already is this file; the machine must use it as its RAM."""
    state = tmp_path / "a,b"
    args = qemu_args(expr_file, tmp_path, params(state, memoryMiB=1536))
    assert opt_after(args, "-object") == [
        f"memory-backend-file,id=mem,size=1536M,mem-path={tmp_path}/a,,b/memory.ram,share=on"
    ]
    assert opt_after(args, "-m") == ["1536M"]
    assert opt_after(args, "-machine")[0].endswith(",memory-backend=mem")


def test_guest_agent_channel(expr_file: Path, tmp_path: Path) -> None:
    """The channel the CLI sets a resumed guest's clock through, at every
    boot (a saved VM resumes only into the same devices)."""
    args = qemu_args(expr_file, tmp_path, params(tmp_path))
    assert "socket,id=qga,path=qga.sock,server=on,wait=off" in opt_after(args, "-chardev")
    devices = opt_after(args, "-device")
    assert "virtio-serial-pci,id=serial0" in devices
    assert "virtserialport,chardev=qga,name=org.qemu.guest_agent.0" in devices
    assert evaluate(expr_file, "guestAgentChannel") == "org.qemu.guest_agent.0"


def test_workspace_disk_mode(expr_file: Path, tmp_path: Path) -> None:
    state = tmp_path / "vm"
    args = qemu_args(expr_file, tmp_path, params(state, workspaceMode="disk"))
    assert opt_after(args, "-drive") == [
        f"id=disk,file={state}/disk.qcow2,if=none,format=qcow2,discard=unmap",
        f"id=workspace,file={state}/workspace.qcow2,if=none,format=qcow2,discard=unmap",
    ]
    assert "virtio-blk-pci,drive=workspace,serial=agent-vm-workspace" in opt_after(args, "-device")
    # No share of any kind: nothing of the host is in the guest's reach.
    assert not opt_after(args, "-fsdev")
    assert not any("9p" in a or "vhost-user-fs" in a for a in args)
    virtiofs = qemu_args(expr_file, tmp_path, params(state, workspaceMode="disk", share="virtiofs"))
    assert not any("vhost-user-fs" in a for a in virtiofs)
    # Share mode (and a file from before the setting) has no workspace disk.
    for p in (params(state, workspaceMode="share"), params(state)):
        assert len(opt_after(qemu_args(expr_file, tmp_path, p), "-drive")) == 1


def test_read_params_refuses_an_unknown_workspace_mode(expr_file: Path, tmp_path: Path) -> None:
    with pytest.raises(NixError, match=r"agent-vm params: workspaceMode must be"):
        evaluate(
            expr_file,
            "params",
            paramsFile=write_params(tmp_path, params("/s", workspaceMode="tmpfs")),
        )


# --- runnerScript: a resume -------------------------------------------------------------------


def test_a_resume_starts_qemu_waiting_for_the_saved_state(expr_file: Path, tmp_path: Path) -> None:
    """AGENT_VM_INCOMING=defer: `-incoming defer` after the accelerator, the
    serial log appended to (the same boot goes on), and the RAM file the
    state was saved with is kept; a boot starts from a fresh RAM file and
    a fresh serial log."""
    state = tmp_path / HOSTILE_STATE
    p = params(state)
    state.mkdir(parents=True)
    (state / "disk.qcow2").write_bytes(b"saved disk")
    (state / "memory.ram").write_bytes(b"saved RAM")
    env = {"AGENT_VM_INCOMING": "defer"}
    res, log, _ = run_runner(expr_file, tmp_path, p, accel="tcg", extra_env=env)
    assert res.returncode == 0, res.stderr
    argv = (log / "qemu.argv").read_text().splitlines()
    boot = qemu_args(expr_file, tmp_path, p)
    resume = ["-incoming", "defer", "-set", "chardev.console.logappend=on"]
    assert argv == [*boot, "-accel", "tcg", *resume]
    # The chardev -set names is the serial log's, which a boot truncates.
    console = [a for a in boot if a.startswith("socket,id=console,")]
    assert len(console) == 1 and console[0].endswith(",logappend=off"), console
    assert (state / "memory.ram").read_bytes() == b"saved RAM"
    assert (state / "disk.qcow2").read_bytes() == b"saved disk"  # not made anew
    res, log, _ = run_runner(expr_file, tmp_path, p, accel="tcg")
    assert res.returncode == 0, res.stderr
    assert "-incoming" not in (log / "qemu.argv").read_text().splitlines()
    assert not (state / "memory.ram").exists()


def test_a_resume_without_its_disk_or_with_a_bad_value_is_refused(
    expr_file: Path, tmp_path: Path
) -> None:
    state = tmp_path / "vm"
    p = params(state)
    res, log, _ = run_runner(expr_file, tmp_path, p, extra_env={"AGENT_VM_INCOMING": "defer"})
    assert res.returncode == 1 and "cannot resume" in res.stderr and "is missing" in res.stderr
    assert not (state / "disk.qcow2").exists()  # never made up for a resume
    assert not (log / "qemu.argv").exists()
    res, log, _ = run_runner(expr_file, tmp_path, p, extra_env={"AGENT_VM_INCOMING": "tcp:0:4444"})
    assert res.returncode == 2 and "AGENT_VM_INCOMING must be empty or defer" in res.stderr
    assert not (log / "qemu.argv").exists()


def test_the_workspace_disk_must_exist(expr_file: Path, tmp_path: Path) -> None:
    """The CLI makes it at create; the runner never makes an empty one."""
    state = tmp_path / "vm"
    p = params(state, workspaceMode="disk")
    res, log, _ = run_runner(expr_file, tmp_path, p, accel="tcg")
    assert res.returncode == 1 and "workspace disk" in res.stderr
    assert not (log / "qemu.argv").exists()
    (state / "workspace.qcow2").write_bytes(b"made at create")
    res, log, _ = run_runner(expr_file, tmp_path, p, accel="tcg")
    assert res.returncode == 0, res.stderr
    assert (state / "workspace.qcow2").read_bytes() == b"made at create"
