"""Egress by domain in a real VM (TCG): the guest's only way out is QEMU's
one guestfwd to the VM's egress proxy; upstream servers on the host's
loopback stand in for the internet, reached only through the proxy's
test-only name mapping. One boot for every property, a second for the
proxy's own lifetime."""

from __future__ import annotations

import base64
import gzip
import json
import os
import signal
import subprocess
import time
from pathlib import Path

from harness import Cli, make_repo, processes_under
from upstream import EXPECTED_DECISIONS, upstream

VALUE = "sk-vm-egress-test-9876543210"
PLACEHOLDER = "agent-vm-placeholder-API_KEY"


def guest(cli: Cli, repo: Path, script: str, check: bool = True) -> str:
    r = cli("shell", "--", "bash", "-c", script, cwd=repo, check=check)
    return r.stdout


def connect_probe(host: str, port: int) -> str:
    """A direct TCP connection from the guest, no proxy involved."""
    return (
        f"if timeout 10 bash -c 'exec 3<>/dev/tcp/{host}/{port}'; "
        "then echo connected; else echo failed; fi"
    )


def host_files_without(value: str, *roots: Path) -> None:
    for root in roots:
        files = [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file()]
        for f in files:
            assert value.encode() not in f.read_bytes(), f


def test_egress_in_a_vm(cli: Cli, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    with upstream(tmp_path / "upstream") as up:
        cli.env |= {
            "AGENT_VM_EGRESS_TEST_HOSTS": up.mapping(),
            "SSL_CERT_FILE": str(up.trust_store(tmp_path)),
        }
        name = cli(
            "create",
            *("--allow", "plain.test", "--allow", "other.test", "--allow", "passthru.test"),
            "--json",
            cwd=repo,
        ).json()["name"]
        vm_dir = cli.state_dir / "vms" / name
        cli.env["HOST_API_KEY"] = VALUE
        cli(
            "secret", "add", "API_KEY", "--domain", "secret.test", "--header", "x-api-key",
            "--from-env", "HOST_API_KEY", cwd=repo,
        )  # fmt: skip
        del cli.env["HOST_API_KEY"]
        ws = vm_dir / "workspace"
        cli("start", cwd=repo)
        (ws / "test-ca.pem").write_bytes(up.ca.read_bytes())

        # An allowed name answers, through the proxy the guest is told to use.
        out = guest(cli, repo, "curl -sS -o /dev/null -w '%{http_code}' http://plain.test/ok")
        assert out == "200" and up.seen[-1][":path"] == "/ok"

        # A name not on the list: the 403 says which VM, which host, and how.
        out = guest(cli, repo, "curl -sS -w '\\n%{http_code}' http://evil.test/x")
        assert out.endswith("\n403") and f"VM {name} refused GET evil.test:80" in out
        assert f"update {name} --add-allow evil.test" in out
        # A denied CONNECT the same, before any tunnel.
        out = guest(
            cli,
            repo,
            "exec 3<>/dev/tcp/10.0.2.100/3128; "
            "printf 'CONNECT evil.test:443 HTTP/1.1\\r\\nHost: evil.test:443\\r\\n\\r\\n' >&3; "
            "timeout 10 cat <&3",
            check=False,
        )
        assert out.startswith("HTTP/1.1 403") and "refused CONNECT evil.test:443" in out

        # Nothing else leaves: not the host's loopback through the NAT
        # address, not an outside address (TEST-NET-1, never routed).
        assert guest(cli, repo, connect_probe("10.0.2.2", up.http_port)) == "failed\n"
        assert guest(cli, repo, connect_probe("192.0.2.1", 80)) == "failed\n"
        assert guest(cli, repo, f"curl -sS --noproxy '*' -m 10 http://10.0.2.2:{up.http_port}/",
                     check=False) == ""  # fmt: skip

        # The placeholder is all the guest has; the upstream gets the secret.
        out = guest(
            cli, repo, 'curl -sS -H "Authorization: Bearer $API_KEY" https://secret.test/v1'
        )
        seen = up.seen[-1]
        assert seen[":path"] == "/v1" and seen["authorization"] == f"Bearer {VALUE}"
        assert seen["x-api-key"] == VALUE
        assert VALUE not in out and PLACEHOLDER in out  # the echo came back scrubbed
        # ... and the placeholder to a host that is not the secret's: refused.
        n = len(up.seen)
        out = guest(
            cli, repo, 'curl -sS -H "x-key: $API_KEY" -w "\\n%{http_code}" http://other.test/'
        )
        assert out.endswith("\n403") and "placeholder of secret API_KEY" in out
        assert len(up.seen) == n
        # A host without a secret: the guest's TLS goes through untouched
        # (it verifies the upstream's own certificate).
        out = guest(cli, repo, "curl -sS --cacert /workspace/test-ca.pem https://passthru.test/p")
        assert json.loads(out)[":path"] == "/p"

        # The secret is nowhere in the guest: its files, environments, processes.
        dump = guest(
            cli,
            repo,
            "sudo sh -c 'cat /proc/[0-9]*/environ; ps auxwwe; cat /proc/cmdline; "
            "cat /sys/firmware/qemu_fw_cfg/by_name/opt/io.systemd.credentials/*/raw; "
            "find /etc /run /home /root /tmp /var/tmp /var/log /usr/local /workspace "
            "-xdev -type f -size -2M -print0 | xargs -0 cat' 2>/dev/null | gzip | base64 -w0",
            check=False,
        )
        dump = gzip.decompress(base64.b64decode(dump)).decode("utf-8", "replace")
        assert PLACEHOLDER in dump and "BEGIN CERTIFICATE" in dump  # the dump saw them
        assert VALUE not in dump
        # Nor on the host where it must not be: params.json, the runner and
        # its closure in the Nix store, every log, QEMU's command line.
        closure = subprocess.run(
            ["nix-store", "-qR", str(vm_dir / "runner")], capture_output=True, text=True, check=True
        ).stdout.split()
        host_files_without(VALUE, vm_dir / "params.json", *map(Path, closure))
        e = vm_dir / "egress"
        logs = ["serial.log", "runner.log", "events.log", "build.log"]
        host_files_without(VALUE, *(vm_dir / x for x in logs if (vm_dir / x).exists()))
        host_files_without(VALUE, e / "network.log", e / "engine.log", e / "config.json")
        qemu_pid = int((vm_dir / "qemu.pid").read_text())
        qemu_cmd = Path(f"/proc/{qemu_pid}/cmdline").read_bytes()
        assert VALUE.encode() not in qemu_cmd and qemu_cmd.count(b"guestfwd=") == 1

        # Every decision is logged; status counts them.
        time.sleep(1)  # tunnels are logged as they close
        log = cli("logs", "--network", "--json", cwd=repo).stdout.splitlines()
        decisions = {(d["method"], d["host"], d["decision"]) for d in map(json.loads, log)}
        assert decisions >= EXPECTED_DECISIONS, decisions
        st = cli("status", "--json", cwd=repo).json()
        assert st["network"] == "allow" and st["egress"]["proxy_running"] is True
        assert st["egress"]["allowed"] >= 3 and st["egress"]["denied"] >= 3
        assert "proxy running" in cli("status", cwd=repo).stdout

        # The proxy dies: the guest reaches nothing, and status says why.
        engine_pid = json.loads((e / "engine.json").read_text())["pid"]
        os.kill(engine_pid, signal.SIGKILL)
        out = guest(cli, repo, "curl -sS -m 20 -o /dev/null -w '%{http_code}' http://plain.test/",
                    check=False)  # fmt: skip
        assert out in ("000", ""), out
        assert guest(cli, repo, connect_probe("10.0.2.2", up.http_port)) == "failed\n"
        st = cli("status", "--json", cwd=repo).json()
        assert st["egress"]["proxy_running"] is False and "fail closed" in st["egress"]["reason"]
        assert "PROXY DOWN" in cli("status", cwd=repo).stdout

        # (That a stop takes a live proxy away with QEMU is shown on
        # test_lifecycle.py's two-repositories VMs: no boot of its own.)
        cli("stop", cwd=repo)
        assert processes_under(cli.state_dir) == []
