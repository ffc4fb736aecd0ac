"""Per-VM SSH keys: the client key we log in with and the guest's host key.

Both are made on the host at create time, so the host key can be pinned in
our known_hosts before the guest ever boots; the guest receives its private
key at run time (fw_cfg credential), never through the Nix store.
"""

from __future__ import annotations

import os
from pathlib import Path

from . import tools
from .fsutil import atomic_write, ensure_private_dir
from .paths import VmPaths


def host_alias(name: str) -> str:
    # A fixed alias keeps known_hosts valid when the SSH port changes.
    return f"agent-vm-{name}"


def generate(vm: VmPaths) -> None:
    ensure_private_dir(vm.ssh_dir)
    for key, comment in ((vm.client_key, f"agent-vm@{vm.name}"), (vm.host_key, f"host@{vm.name}")):
        tools.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(key)])
        os.chmod(key, 0o600)
    write_known_hosts(vm)


def write_known_hosts(vm: VmPaths) -> None:
    pub = vm.host_pubkey.read_text().split()
    atomic_write(vm.known_hosts, f"{host_alias(vm.name)} {pub[0]} {pub[1]}\n")


def public_key(path: Path) -> str:
    return path.read_text().strip()
