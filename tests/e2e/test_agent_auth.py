"""Only the VM's owner reaches its agent, and the MCP servers' secrets stay
out of the agent's reach (issue 9, items 6 and 7). One VM serves every
assertion: the agent port without the token, with a wrong Host, with the
token (MCP tools answer through mcp-proxy); the token file against another
host user; the MCP secrets against the guest user. The same VM (its state
dir named with a space and a comma, for QEMU's option escaping) then
shows what every VM must: forwards on loopback only, private state, no
key in the Nix store, the SSH host key from a credential and pinned."""

from __future__ import annotations

import os
import re
import secrets
import shlex
import stat
import subprocess
from pathlib import Path

from harness import (
    MCP_INIT,
    Cli,
    Unprivileged,
    agent_request,
    jsonrpc_result,
    make_repo,
    store_files,
)


def mcp_session(port: int, token: str, server: str) -> tuple[str, str]:
    """Initialize a streamable-HTTP session with `server`: (path, session id)."""
    path = f"/servers/{server}/mcp/"
    code, headers, body = agent_request(port, "POST", path, token=token, body=MCP_INIT)
    assert code == 200, (code, body)
    assert jsonrpc_result(body)["result"]["serverInfo"]["name"] == server
    session = headers["mcp-session-id"]
    code, _, _ = agent_request(
        port,
        "POST",
        path,
        token=token,
        session=session,
        body={"jsonrpc": "2.0", "method": "notifications/initialized"},
    )
    assert code in (200, 202)
    return path, session


def mcp_call(port: int, token: str, path: str, session: str, method: str, **params: object) -> dict:  # type: ignore[type-arg]
    body = {"jsonrpc": "2.0", "id": 2, "method": method, "params": params}
    code, _, text = agent_request(port, "POST", path, token=token, session=session, body=body)
    assert code == 200, (code, text)
    result: dict = jsonrpc_result(text)["result"]  # type: ignore[type-arg]
    return result


# Run in the guest as the SSH user: everything that user can read where a
# secret could show. Nothing secret is sent in: the host looks for it in the
# output.
GUEST_LOOK = r"""
for f in /run/agent-vm-agent/mcp-secrets.env /run/agent-vm-agent/nginx-auth.conf \
         /run/credentials/agent-vm-agent.service/agent-vm.mcp-secrets \
         /run/credentials/@system/agent-vm.mcp-secrets \
         /run/credentials/@system/agent-vm.agent-token \
         /sys/firmware/qemu_fw_cfg/by_name/opt/io.systemd.credentials/agent-vm.mcp-secrets/raw \
         /sys/firmware/qemu_fw_cfg/by_name/opt/io.systemd.credentials/agent-vm.agent-token/raw; do
  if cat "$f" >/dev/null 2>&1; then echo "READABLE $f"; cat "$f"; else echo "DENIED $f"; fi
done
echo "--- environ"
for e in /proc/[0-9]*/environ; do tr '\0' '\n' <"$e" 2>/dev/null; done
echo "--- ps"
ps axeww -o user:20=,args=
echo "--- mcp user"
ps -u agent-mcp -o args=
echo "--- self"
id -un
if sudo -n true 2>/dev/null; then echo "HAS SUDO"; fi
"""


def listeners() -> dict[int, str]:
    """Listening TCP ports -> local address, from /proc/net/tcp (IPv4)."""
    out = {}
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, st = fields[1], fields[3]
        if st != "0A":  # LISTEN
            continue
        addr_hex, port_hex = local.split(":")
        octets = [str(int(addr_hex[i : i + 2], 16)) for i in (6, 4, 2, 0)]
        out[int(port_hex, 16)] = ".".join(octets)
    return out


def mode(p: Path) -> int:
    return stat.S_IMODE(p.lstat().st_mode)


def _ports_keys_and_host_key(
    cli: Cli,
    repo: Path,
    vm: dict,  # type: ignore[type-arg]
    vm_dir: Path,
    tmp_path: Path,
) -> None:
    """On the running VM: loopback-only forwards, private state, no key in
    the store, the host key from a credential, and the pinned host key
    enforced (ends with the VM stopped)."""
    # Forwards listen on 127.0.0.1 only.
    ls = listeners()
    assert ls.get(vm["ssh_port"]) == "127.0.0.1"
    assert ls.get(vm["agent_port"]) == "127.0.0.1"

    # Private state: dirs 0700, keys 0600, sockets and logs not for others.
    assert mode(cli.state_dir) == 0o700
    assert mode(vm_dir) == 0o700 and mode(vm_dir / "ssh") == 0o700
    for key in ("id_ed25519", "ssh_host_ed25519_key"):
        assert mode(vm_dir / "ssh" / key) == 0o600
    for f in ("qmp.sock", "console.sock", "serial.log", "runtime.json", "vm.json"):
        assert mode(vm_dir / f) & 0o077 == 0, f

    # Nothing secret in the Nix store: not the runner, not its .drv, nothing.
    secrets = [
        "".join((vm_dir / "ssh" / key).read_text().splitlines()[1:-1])
        for key in ("id_ed25519", "ssh_host_ed25519_key")
    ]
    for f in store_files((vm_dir / "runner").resolve()):
        data = f.read_bytes().decode("latin-1")
        for s in secrets:
            assert s[:40] not in data, f"private key material in {f}"
    # The host key reached the guest through a credential, not the store.
    guest_pub = cli("shell", "--", "cat", "/etc/ssh/ssh_host_ed25519_key.pub", cwd=repo).stdout
    assert (
        guest_pub.split()[1] == (vm_dir / "ssh" / "ssh_host_ed25519_key.pub").read_text().split()[1]
    )

    # The pinned host key is enforced: a VM answering with another key is refused.
    known = vm_dir / "ssh" / "known_hosts"
    good = known.read_text()
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "other")], check=True
    )
    other = (tmp_path / "other.pub").read_text().split()
    known.write_text(f"{good.split()[0]} {other[0]} {other[1]}\n")
    r = cli("shell", "--", "true", cwd=repo, check=False)
    assert r.returncode != 0 and "Host key verification failed" in r.stderr
    assert cli("status", "--json", cwd=repo).json()["ssh_reachable"] is False
    cli("stop", cwd=repo)
    r = cli("start", cwd=repo, check=False)
    assert r.returncode == 15 and "not its own" in r.stderr, r.stderr
    known.write_text(good)


def test_only_the_owner_reaches_the_agent_and_secrets_stay_with_the_servers(
    cli: Cli, tmp_path: Path, unprivileged: Unprivileged
) -> None:
    # A state dir with a space and a comma: QEMU option escaping is exercised.
    cli.state_dir = tmp_path / "st ate,x"
    repo = make_repo(tmp_path / "repo")
    secret = secrets.token_hex(16)
    env_file = tmp_path / "mcp.env"
    env_file.write_text(f"# for the servers only\nE2E_SECRET={secret}\n")
    # The test guest's user has sudo unless told otherwise (NixOS: no sudo
    # by default); a user with sudo is guest root, who reads everything.
    cli.env["AGENT_VM_TEST_CMDLINE"] = "agent_vm.sudo=0"
    up = cli("up", "--mcp-env", str(env_file), cwd=repo)
    st = cli("status", "--json", cwd=repo).json()
    name, port = st["name"], st["agent_port"]
    vm_dir = cli.state_dir / "vms" / name
    token_file = vm_dir / "secrets" / "agent-token"
    token = token_file.read_text().strip()
    assert re.fullmatch(r"[0-9a-f]{64}", token)

    # The token file is the owner's alone.
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(token_file.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE((vm_dir / "secrets" / "mcp.env").stat().st_mode) == 0o600
    if os.getuid() == 0:
        other = subprocess.run(
            ["runuser", "-u", unprivileged.name, "--", "cat", str(token_file)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert other.returncode != 0 and "Permission denied" in other.stderr
        assert token not in other.stdout
    # Nothing Nix made or read holds the token or the secret; nor params.json.
    assert token not in (vm_dir / "params.json").read_text()
    for f in store_files((vm_dir / "runner").resolve()):
        data = f.read_bytes().decode("latin-1")
        assert token not in data and secret not in data, f

    # `up` and `mcp-config` hand out paste-ready client configuration.
    claude = [line for line in up.stdout.splitlines() if line.startswith("claude mcp add")]
    assert shlex.split(claude[0])[-2:] == ["--header", f"Authorization: Bearer {token}"]
    conf = cli("mcp-config", "--json", cwd=repo).json()
    assert conf["servers_from_guest"] is True
    assert sorted(s["name"] for s in conf["servers"]) == ["e2e-env", "workspace"]
    assert all(s["headers"] == {"Authorization": f"Bearer {token}"} for s in conf["servers"])
    assert f"Bearer {token}" in cli("status", cwd=repo).stdout

    # No token, or a wrong one: 401, and nothing from mcp-proxy.
    code, headers, body = agent_request(port, token=None)
    assert code == 401 and headers["www-authenticate"].startswith("Bearer")
    assert "server_instances" not in body
    assert agent_request(port, token="0" * 64)[0] == 401
    assert (
        agent_request(port, "POST", "/servers/workspace/mcp/", token=None, body=MCP_INIT)[0] == 401
    )
    # A Host that is not the host side's address (DNS rebinding), even with the token.
    for host in ("evil.example", f"evil.example:{port}", "127.0.0.1:1", f"127.0.0.1.nip.io:{port}"):
        code, _, body = agent_request(port, token=token, host=host)
        assert code == 403 and "server_instances" not in body, host
    # The token and an accepted Host: the agent and its MCP tools answer.
    for host in (f"127.0.0.1:{port}", f"localhost:{port}"):
        code, _, body = agent_request(port, token=token, host=host)
        assert code == 200 and "server_instances" in body, host
    path, session = mcp_session(port, token, "workspace")
    tools = mcp_call(port, token, path, session, "tools/list")
    assert [t["name"] for t in tools["tools"]] == ["workspace_status"]
    ws = mcp_call(port, token, path, session, "tools/call", name="workspace_status", arguments={})
    assert ws["structuredContent"]["path"] == "/workspace"
    assert ws["structuredContent"]["branch"] == "main"
    # The servers were given the VM's MCP secrets...
    path, session = mcp_session(port, token, "e2e-env")
    got = mcp_call(port, token, path, session, "tools/call", name="e2e_environment", arguments={})
    assert got["structuredContent"] == {"E2E_SECRET": secret}

    # ...and the guest user (the agent) cannot read them anywhere.
    look = cli("shell", "--", "bash", "-c", GUEST_LOOK, cwd=repo).stdout
    assert secret not in look and token not in look
    # (The script's own text is in its command line: match whole lines.)
    assert not re.findall(r"^READABLE .*", look, re.M)
    assert len(re.findall(r"^DENIED /", look, re.M)) == 7
    environ, rest = look.split("--- environ\n", 1)[1].split("--- ps\n", 1)
    # Control: the same reads show the user's own processes' environment.
    assert "USER=dev" in environ
    ps, rest = rest.split("--- mcp user\n", 1)
    assert "agent-mcp" in ps  # its processes are listed, without their environment
    mcp_procs, me = rest.split("--- self\n", 1)
    assert "mcp_proxy" in mcp_procs and me.strip() == "dev"  # "HAS SUDO" would follow

    _ports_keys_and_host_key(cli, repo, st, vm_dir, tmp_path)
    cli("destroy", "--force", cwd=repo)
