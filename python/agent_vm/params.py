"""The parameters file Nix builds a VM's runner from (models.VmParams,
docs/contract.md): made from the VM's config and this host's user."""

from __future__ import annotations

import os
from typing import Literal

from . import ownership, tools
from .errors import InvalidInput
from .models import GuestUser, VmConfig, VmParams, WorkspaceShare
from .paths import VmPaths

# The port the agent service listens on inside the guest; the guest
# configuration may move it (lib/mk-branch-vm.nix reads the real one).
GUEST_AGENT_PORT = 8000
SHARE_ENV = "AGENT_VM_SHARE"


def workspace_share() -> Literal["9p", "virtiofs"]:
    """virtiofs when a virtiofsd is on PATH (the Nix package puts one there),
    9p otherwise; $AGENT_VM_SHARE (9p or virtiofs) overrides."""
    forced = os.environ.get(SHARE_ENV)
    if forced == "9p":
        return "9p"
    if forced == "virtiofs":
        return "virtiofs"
    if forced:
        raise InvalidInput(f"{SHARE_ENV} must be 9p or virtiofs, not {forced!r}")
    return "virtiofs" if tools.have("virtiofsd") else "9p"


def for_vm(vm: VmPaths, cfg: VmConfig) -> VmParams:
    mapping = ownership.for_host_user()
    return VmParams(
        name=cfg.name,
        state_dir=str(vm.dir),
        host_address=cfg.host_address,
        ssh_port=cfg.ssh_port,
        agent_port=cfg.agent_port,
        guest_agent_port=GUEST_AGENT_PORT,
        memory_mib=cfg.memory_mib,
        cores=cfg.cores,
        disk_size_mib=cfg.disk_size_mib,
        network=cfg.network,
        share=workspace_share(),
        workspace_mode=cfg.workspace_mode,
        workspace=WorkspaceShare(host_path=cfg.workspace, security_model=mapping.security_model),
        user=GuestUser(uid=mapping.uid, gid=mapping.gid),
        user_module=cfg.user_module,
    )
