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
import shlex
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
    "network-allow",
    "workspace-env-file",
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
    check_agent(c, case, r)
    if r["egressEnabled"]:
        check_egress(c, case, r)
    c.check(
        case,
        "runner execs QEMU with the guest's kernel",
        "qemu-system-x86_64" in r["runnerExec"] and r["agentVm"]["kernel"] in r["runnerExec"],
        r["runnerExec"][:300],
    )


def as_list(v: Any) -> list[Any]:
    """A systemd setting as the unit file has it: one value or several."""
    return v if isinstance(v, list) else [] if v is None else [v]


def check_agent(c: Checker, case: str, r: dict[str, Any]) -> None:
    """The agent port: nginx checks the VM's token and the Host header in
    front of mcp-proxy, which runs as the servers' own user on loopback."""
    a, units, creds = r["agent"], r["units"], r["credentialNames"]
    agent = units.get("agent-vm-agent")
    user = r["users"].get(a["user"])
    c.check(
        case,
        "mcp-proxy runs as the servers' own system user, on loopback, with the MCP secrets",
        agent is not None
        and user is not None
        and a["user"] != r["user"]["name"]
        and user["isSystemUser"]
        and agent["serviceConfig"]["User"] == a["user"]
        and agent["serviceConfig"]["Group"] == user["group"]
        and f'"--host" "127.0.0.1" "--port" "{a["backendPort"]}"'
        in agent["serviceConfig"]["ExecStart"]
        and agent["serviceConfig"]["ImportCredential"] == [creds["mcpSecrets"]],
        {"agent": a, "unit": agent, "user": user},
    )
    nginx = r["nginx"]
    vhosts = nginx["virtualHosts"]
    vhost = vhosts.get("agent-vm-agent", {})
    loc = vhost.get("locations", {}).get("/", {})
    c.check(
        case,
        "nginx on the agent port (its only host), proxying to mcp-proxy",
        nginx["enable"]
        and list(vhosts) == ["agent-vm-agent"]
        and vhost["default"]
        and vhost["listen"] == [{"addr": "0.0.0.0", "port": a["port"], "ssl": False}]
        and list(vhost["locations"]) == ["/"]
        and loc["proxyPass"] == f"http://127.0.0.1:{a['backendPort']}",
        vhosts,
    )
    conf = loc.get("extraConfig", "")
    c.check(
        case,
        "... only with the token and an accepted Host (maps included from tmpfs)",
        "if ($agent_vm_host_ok = 0) {\n  return 403;" in conf
        and "if ($agent_vm_token_ok = 0) {\n  return 401;" in conf
        and "include /run/agent-vm-agent/nginx-auth.conf;" in nginx["appendHttpConfig"]
        # "Bearer " and 64 hex digits: more than nginx's default bucket.
        and (nginx["mapHashBucketSize"] or 0) >= 128,
        nginx,
    )
    auth = units.get("agent-vm-agent-auth")
    c.check(
        case,
        "the maps are written from the token credential before nginx starts",
        auth is not None
        and auth["requiredBy"] == ["nginx.service"]
        and "nginx.service" in auth["before"]
        and auth["serviceConfig"]["Type"] == "oneshot"
        and auth["serviceConfig"]["ImportCredential"] == [creds["agentToken"]]
        and f"-g {nginx['group']} /run/agent-vm-agent" in auth["script"]
        and nginx["group"] in r["groups"],
        auth,
    )
    c.check(
        case,
        "the runner hands in the token and the accepted Host values",
        f"name=opt/io.systemd.credentials/{creds['agentToken']}," in r["runnerExec"]
        and "agent_vm.agent_hosts=127.0.0.1:8000,localhost:8000" in r["runnerExec"],
        r["runnerExec"][-1500:],
    )
    c.check(
        case,
        "agent port open in the firewall, the backend not",
        a["port"] in r["firewallPorts"] and a["backendPort"] not in r["firewallPorts"],
        r["firewallPorts"],
    )


RUN_BUNDLE = "/run/agent-vm/ca-certificates.crt"
EGRESS_ENV = "/run/agent-vm/egress.env"
TRUST_STORE = (
    "ssl/certs/ca-certificates.crt",
    "ssl/certs/ca-bundle.crt",
    "pki/tls/certs/ca-bundle.crt",
)


def check_egress(c: Checker, case: str, r: dict[str, Any]) -> None:
    """The guest's side of the egress proxy, the same in every network mode."""
    units, creds = r["units"], r["credentialNames"]["egress"]
    etc = r["etc"]
    c.check(
        case,
        "egress: /etc's trust store is the bundle made at boot (over ca.nix's)",
        all(etc.get(n) == RUN_BUNDLE for n in TRUST_STORE)
        and etc["ssl/trust-source"].startswith("/nix/store/"),
        etc,
    )
    unit = units.get("agent-vm-egress")
    c.check(
        case,
        "egress: a oneshot imports the CA and environment before the agent, nix-daemon, sshd",
        unit is not None
        and unit["serviceConfig"]["Type"] == "oneshot"
        and unit["serviceConfig"]["ImportCredential"] == [creds["ca"], creds["env"]]
        and {"agent-vm-agent.service", "nix-daemon.service", "sshd.service"} <= set(unit["before"])
        and "/etc/ssl/certs/ca-bundle.crt" in unit["script"]
        and f"mv {RUN_BUNDLE}.tmp {RUN_BUNDLE}" in unit["script"],
        unit,
    )
    agent, daemon = units.get("agent-vm-agent", {}), units.get("nix-daemon", {})
    c.check(
        case,
        "egress: the proxy environment reaches login shells, the agent and nix-daemon",
        f". {EGRESS_ENV}" in r["extraInit"]
        and all(
            f"-{EGRESS_ENV}" in as_list(u.get("serviceConfig", {}).get("EnvironmentFile"))
            and "agent-vm-egress.service" in u.get("after", [])
            for u in (agent, daemon)
        ),
        {"extraInit": r["extraInit"], "agent": agent, "nix-daemon": daemon},
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
    if case == "workspace-env-file":
        c.check(
            case,
            "an MCP environment file in the workspace is refused",
            [m.split(" is ")[0] for m in r["failedAssertions"]]
            == ["agent-vm.agent.environmentFile"],
            r["failedAssertions"],
        )
        return
    check_guest(c, case, r)
    fs, user = r["fileSystems"], r["user"]
    argv = shlex.split(r["runnerExec"])
    network = argv[argv.index("-netdev") + 1]
    if case == "network-allow":
        egress = r["credentialNames"]["egress"]
        c.check(
            case,
            "QEMU lets out only the proxy address, to the relay",
            network.startswith("user,id=net0,restrict=on,guestfwd=tcp:10.0.2.100:3128-cmd:")
            and "-socat/bin/socat FD:0,,shut-down UNIX-CONNECT:egress/proxy.sock," in network,
            network,
        )
        c.check(
            case,
            "the proxy's CA and environment handed in as credentials",
            all(
                f"name=opt/io.systemd.credentials/{n}," in r["runnerExec"]
                for n in (egress["ca"], egress["env"])
            ),
            r["runnerExec"][-800:],
        )
        text = r["runnerText"]
        engine = "'/nix/store/00000000000000000000000000000000-agent-vm/bin/agent-vm-egress'"
        c.check(
            case,
            "the runner starts the proxy before QEMU",
            engine in text and text.index(engine) < text.index(r["runnerExec"]),
            text[:600],
        )
    else:
        c.check(
            case,
            "no proxy: neither guestfwd nor the egress credentials",
            "guestfwd" not in network
            and "restrict=on" not in network
            and "egress" not in r["runnerExec"],
            network,
        )
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
            "'local,id=fs-nix-store,path=/nix/store,security_model=none,readonly=on'"
            in r["runnerExec"],
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
            == "-/run/secrets/agent-vm-mcp.env",
            r["units"]["agent-vm-agent"],
        )
        c.check(
            case,
            "its servers' user and backend port",
            r["agent"] == {"user": "mcp", "port": 3000, "backendPort": 9000}
            and r["users"]["mcp"]["group"] == "mcp"
            and "mcp" in r["groups"],
            {"agent": r["agent"], "users": r["users"]},
        )
        c.check(
            case,
            "egress off: nixpkgs' trust store, no proxy environment",
            not r["egressEnabled"]
            and "agent-vm-egress" not in r["units"]
            and all(
                r["etc"][n].endswith("-nss-cacert/etc/ssl/certs/ca-bundle.crt") for n in TRUST_STORE
            )
            and EGRESS_ENV not in r["extraInit"]
            and "EnvironmentFile" not in r["units"].get("nix-daemon", {}).get("serviceConfig", {}),
            {"etc": r["etc"], "extraInit": r["extraInit"]},
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


def check_same_guest(c: Checker, open_: Any, allow: Any) -> None:
    """The guest system is the same in every network mode (what differs
    arrives at boot), so switching a VM's mode rebuilds nothing."""
    keys = ("fileSystems", "units", "users", "etc", "extraInit", "nginx", "agentVm")
    c.check(
        "network-allow",
        "the same guest system as with --network open",
        open_ is not None and allow is not None and all(open_[k] == allow[k] for k in keys),
        [k for k in keys if open_ and allow and open_[k] != allow[k]],
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
    results: dict[str, Any] = {}
    for case in CASES:
        results[case], stderr = evaluate(lib_dir, root, case)
        check(c, case, results[case], stderr)
    check_same_guest(c, results["default-guest"], results["network-allow"])
    print(f"{'all checks passed' if not c.failed else f'{c.failed} check(s) failed'}")
    return 1 if c.failed else 0


if __name__ == "__main__":
    sys.exit(main())
