"""Security properties, checked on a running VM (issue: hardening)."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

from harness import Cli, make_repo, store_files


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


def test_secrets_ports_and_permissions(agent_vm_bin: str, cli: Cli, tmp_path: Path) -> None:
    # A state dir with a space and a comma: QEMU option escaping is exercised.
    cli.state_dir = tmp_path / "st ate,x"
    repo = make_repo(tmp_path / "repo")
    vm = cli("create", "--json", cwd=repo).json()
    cli("start", cwd=repo)
    vm_dir = cli.state_dir / "vms" / vm["name"]

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
    cli("destroy", "--force", cwd=repo)


def test_public_host_address_warns(cli: Cli, repo: Path) -> None:
    r = cli("create", "--host", "0.0.0.0", cwd=repo)
    assert "warning:" in r.stderr and "exposes" in r.stderr
    assert os.environ.get("NO_COLOR") is None or "\x1b[" not in r.stderr
