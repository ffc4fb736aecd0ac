"""Per-VM SSH keys: the client key we log in with and the guest's host key.

Both are made on the host at create time, so the host key can be pinned in
our known_hosts before the guest ever boots; the guest receives its private
key at run time (fw_cfg credential), never through the Nix store.
"""

from __future__ import annotations

import os

from . import tools
from .fsutil import atomic_write, ensure_private_dir
from .paths import VmPaths


def host_alias(name: str) -> str:
    # A fixed alias keeps known_hosts valid when the SSH port changes.
    return f"agent-vm-{name}"


def generate(vm: VmPaths, name: str) -> None:
    """Make both keys in `vm` (possibly a temp dir) for the VM called `name`."""
    ensure_private_dir(vm.ssh_dir)
    for key, comment in ((vm.client_key, f"agent-vm@{name}"), (vm.host_key, f"host@{name}")):
        tools.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(key)])
        os.chmod(key, 0o600)
    write_known_hosts(vm, name)


def write_known_hosts(vm: VmPaths, name: str) -> None:
    pub = vm.host_pubkey.read_text().split()
    atomic_write(vm.known_hosts, f"{host_alias(name)} {pub[0]} {pub[1]}\n")
