#!/usr/bin/env python3
"""Evaluates agent-vm's NixOS modules with a real nixpkgs lib and checks
what they produce (tests/nix/real-lib/README.md). Not part of CI (CI has
no nixpkgs): run it by hand with the path of a nixpkgs `lib/` directory.

    tests/nix/real-lib/run.py /path/to/nixpkgs/lib [/path/to/agent-vm]

The second argument evaluates another checkout's modules with this
harness (e.g. an older commit, to see a check fail). Prints one line per
check and exits non-zero if any failed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
CASES = [
    "default-guest",
    "system-user-9p-host-store",
    "user-module",
    "conflicting-module",
    "host-two-vms",
    "host-port-clash",
]


class Checker:
    def __init__(self) -> None:
        self.failed = 0

    def check(self, case: str, what: str, ok: bool, got: Any = None) -> None:
        if not ok:
            self.failed += 1
        shown = "" if ok else f": got {json.dumps(got)[:600]}"
        print(f"{'ok  ' if ok else 'FAIL'} {case}: {what}{shown}")


def evaluate(lib_dir: Path, root: Path, case: str) -> tuple[Any, str]:
    res = subprocess.run(
        [
            "nix-instantiate",
            "--eval",
            "--strict",
            "--json",
            str(HERE / "harness.nix"),
            "--argstr",
            "libDir",
            str(lib_dir),
            "--argstr",
            "root",
            str(root),
            "--argstr",
            "case",
            case,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    return (json.loads(res.stdout) if res.returncode == 0 else None), res.stderr


def check_guest(c: Checker, case: str, r: dict[str, Any]) -> None:
    c.check(case, "no failed assertion", r["failedAssertions"] == [], r["failedAssertions"])
    fs = r["fileSystems"]
    c.check(
        case,
        "root disk by serial, ext4",
        fs["/"]["device"].endswith("virtio-agent-vm-disk") and fs["/"]["fsType"] == "ext4",
        fs["/"],
    )
    c.check(
        case,
        "store mounts needed for boot",
        all(fs[m]["neededForBoot"] for m in ("/nix/.ro-store", "/nix/store")),
        fs,
    )
    sshd = r["sshd"]
    c.check(
        case,
        "sshd: keys only, no root, only the guest user",
        sshd["enable"]
        and sshd["hostKeys"] == []
        and not sshd["PasswordAuthentication"]
        and not sshd["KbdInteractiveAuthentication"]
        and sshd["PermitRootLogin"] == "no"
        and sshd["AllowUsers"] == ["dev"],
        sshd,
    )
    c.check(
        case,
        "authorized keys from the credential, not the home directory",
        "/run/agent-vm/ssh/authorized_keys" in sshd["authorizedKeysFiles"]
        and not any("%h" in f for f in sshd["authorizedKeysFiles"]),
        sshd,
    )
    units = r["units"]
    c.check(
        case,
        "credentials unit before sshd",
        "sshd.service" in units["agent-vm-credentials"]["before"]
        and units["agent-vm-credentials"]["serviceConfig"]["Type"] == "oneshot",
        units,
    )
    agent = units.get("agent-vm-agent")
    c.check(
        case,
        "agent unit runs mcp-proxy as the guest user",
        agent is not None
        and agent["serviceConfig"]["User"] == "dev"
        and "mcp-proxy" in agent["serviceConfig"]["ExecStart"],
        agent,
    )
    c.check(
        case,
        "agent port open in the firewall",
        r["agentVm"]["agentPort"] in r["firewallPorts"],
        r["firewallPorts"],
    )
    c.check(
        case,
        "runner execs QEMU with the guest's kernel",
        "qemu-system-x86_64" in r["runnerExec"] and r["agentVm"]["kernel"] in r["runnerExec"],
        r["runnerExec"][:300],
    )


def check(c: Checker, case: str, r: Any, stderr: str) -> None:
    if case == "conflicting-module":
        c.check(
            case,
            "fails with a conflict naming where the CLI's value comes from",
            r is None
            and "The option `agent-vm.user.uid' has conflicting definition values" in stderr
            and "lib/mk-branch-vm.nix" in stderr,
            stderr[-800:],
        )
        return
    c.check(case, "evaluates", r is not None, stderr[-1500:])
    if r is None:
        return
    if case.startswith("host-"):
        units = r["units"]
        if case == "host-port-clash":
            c.check(
                case,
                "0.0.0.0:2222 and 127.0.0.1:2222 clash",
                r["failedAssertions"]
                == [
                    "services.agent-vm.vms: host ports clash: a's sshPort (0.0.0.0:2222)"
                    " and b's sshPort (127.0.0.1:2222)."
                ],
                r["failedAssertions"],
            )
            return
        c.check(case, "no failed assertion", r["failedAssertions"] == [], r["failedAssertions"])
        c.check(
            case,
            "one notify unit per VM",
            sorted(units) == ["agent-vm-project-feature", "agent-vm-project-main"]
            and all(u["serviceConfig"]["Type"] == "notify" for u in units.values()),
            units,
        )
        main, feature = units["agent-vm-project-main"], units["agent-vm-project-feature"]
        c.check(
            case,
            "autostart decides wantedBy",
            main["wantedBy"] == ["multi-user.target"] and feature["wantedBy"] == [],
            units,
        )
        c.check(
            case,
            "units run as the declared users",
            main["serviceConfig"]["User"] == "agent-vm"
            and feature["serviceConfig"]["User"] == "alice",
            units,
        )
        c.check(
            case,
            "declared settings on the command line",
            '"--config" "/nix/store/' in main["serviceConfig"]["ExecStart"]
            and '"--network" "none" "--ephemeral"' in feature["serviceConfig"]["ExecStart"],
            units,
        )
        c.check(
            case,
            "the service user is a system user in kvm",
            r["users"]["agent-vm"]["isSystemUser"]
            and r["agentVmGroup"]
            and r["users"]["agent-vm"]["extraGroups"] == ["kvm"],
            r["users"],
        )
        c.check(
            case,
            "per-user state dirs",
            sorted(r["tmpfiles"])
            == sorted(
                [
                    "d /var/lib/agent-vm 0755 root root - -",
                    "d /var/lib/agent-vm/agent-vm 0700 agent-vm - - -",
                    "d /var/lib/agent-vm/alice 0700 alice - - -",
                ]
            ),
            r["tmpfiles"],
        )
        c.check(
            case,
            "programs.agent-vm",
            r["kvmMembers"] == ["alice"] and r["systemPackages"] == ["agent-vm"],
            r,
        )
        return
    check_guest(c, case, r)
    fs, user = r["fileSystems"], r["user"]
    if case == "default-guest":
        c.check(
            case,
            "normal user 1000 in its own group",
            user["uid"] == 1000
            and user["isNormalUser"]
            and user["group"] == "dev"
            and r["groups"]["dev"] == 1000,
            user,
        )
        c.check(case, "workspace over virtiofs", fs["/workspace"]["fsType"] == "virtiofs", fs)
        c.check(
            case,
            "store: erofs image, tmpfs overlay",
            fs["/nix/.ro-store"]["fsType"] == "erofs"
            and fs["/nix/store"]["fsType"] == "overlay"
            and r["agentVm"]["storeImage"] is not None
            and not r["agentVm"]["hostStore"],
            fs,
        )
    elif case == "system-user-9p-host-store":
        c.check(
            case,
            "system user 400",
            user["uid"] == 400 and user["isSystemUser"] and not user["isNormalUser"],
            user,
        )
        c.check(
            case,
            "workspace and store over 9p",
            fs["/workspace"]["fsType"] == "9p"
            and fs["/nix/.ro-store"]["fsType"] == "9p"
            and fs["/nix/.ro-store"]["device"] == "nix-store"
            and "ro" in fs["/nix/.ro-store"]["options"],
            fs,
        )
        c.check(
            case,
            "no store image, the host's store",
            r["agentVm"]["storeImage"] is None and r["agentVm"]["hostStore"],
            r["agentVm"],
        )
        c.check(
            case,
            "9p modules in the initrd",
            {"9p", "9pnet_virtio"} <= set(r["initrdModules"]),
            r["initrdModules"],
        )
        c.check(
            case,
            "the host's store shared read-only",
            "'mount_tag=nix-store'" not in r["runnerExec"] and "readonly=on" in r["runnerExec"],
            r["runnerExec"][:300],
        )
    elif case == "user-module":
        settable = set(r["settable"])
        per_server = {s for s in settable if ".<name>." in s}
        missing = settable - per_server - set(r["setByUserModule"])
        c.check(case, "the module sets every option a user may set", not missing, sorted(missing))
        node = r["agentServers"].get("node", {})
        c.check(
            case,
            "... and every server option",
            {s.rsplit(".", 1)[1] for s in per_server} <= set(node)
            and node["args"] == ["server.js"]
            and node["env"] == {"LOG_LEVEL": "info"},
            node,
        )
        c.check(
            case,
            "its mount point wins over the CLI's default",
            "/src" in fs
            and "/workspace" not in fs
            and r["units"]["agent-vm-agent"]["serviceConfig"]["WorkingDirectory"] == "/src",
            fs,
        )
        c.check(
            case,
            "gid 100 joins users, sudo via wheel",
            user["group"] == "users" and "wheel" in user["extraGroups"] and r["sudo"],
            user,
        )
        c.check(
            case,
            "environment file optional",
            r["units"]["agent-vm-agent"]["serviceConfig"]["EnvironmentFile"]
            == "-/src/.agent-vm.env",
            r["units"]["agent-vm-agent"],
        )
        c.check(
            case,
            "outbound none adds the egress table",
            r["nftablesTables"] == ["agent-vm-egress"],
            r["nftablesTables"],
        )
        c.check(case, "no autologin", r["autologin"] is None, r["autologin"])
        c.check(
            case,
            "read-only store: a bind mount",
            fs["/nix/store"]["options"] == ["bind"] and "/nix/.rw-store" not in fs,
            fs,
        )
        c.check(
            case,
            "agent port 3000 forwarded and open",
            r["agentVm"]["agentPort"] == 3000
            and 3000 in r["firewallPorts"]
            and "-:3000'" in r["runnerExec"],
            r["agentVm"],
        )


def main() -> int:
    if len(sys.argv) not in (2, 3) or not (Path(sys.argv[1]) / "default.nix").is_file():
        print(__doc__, file=sys.stderr)
        return 2
    lib_dir = Path(sys.argv[1]).resolve()
    root = Path(sys.argv[2]).resolve() if len(sys.argv) == 3 else ROOT
    # The path reaches Nix as --argstr, never spliced into Nix source.
    version = subprocess.run(
        [
            *("nix-instantiate", "--eval", "--expr", "{ d }: (import (/. + d)).version"),
            *("--argstr", "d", str(lib_dir)),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    nix = subprocess.run(
        ["nix-instantiate", "--version"], capture_output=True, text=True, check=False
    )
    print(f"nixpkgs lib {version.stdout.strip() or version.stderr.strip()} at {lib_dir}")
    print(f"{nix.stdout.strip()}; modules of {root}")
    c = Checker()
    for case in CASES:
        result, stderr = evaluate(lib_dir, root, case)
        check(c, case, result, stderr)
    print(f"{'all checks passed' if not c.failed else f'{c.failed} check(s) failed'}")
    return 1 if c.failed else 0


if __name__ == "__main__":
    sys.exit(main())
