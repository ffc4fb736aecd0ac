"""Where everything lives in the state directory (docs/architecture.md)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from .errors import InvalidInput
from .fsutil import check_private_dir


def default_state_dir() -> Path:
    return Path(platformdirs.user_state_dir("agent-vm", appauthor=False))


def check_state_dir(path: Path) -> Path:
    """The state dir as an absolute path, refusing what ssh cannot be given
    and an existing directory that is not private to this user.

    ssh expands ${VAR} in key and known_hosts paths and has no escape for it;
    a double quote cannot be quoted in its option values.
    """
    text = str(path)
    if "${" in text or '"' in text or "\n" in text:
        raise InvalidInput(
            f"the state directory {text!r} contains '${{', a double quote or a newline",
            hint="choose another --state-dir",
        )
    path = path.absolute()
    with contextlib.suppress(FileNotFoundError):  # made 0700 when first needed
        check_private_dir(path)
    return path


@dataclass(frozen=True)
class StateLayout:
    root: Path

    @property
    def vms(self) -> Path:
        return self.root / "vms"

    @property
    def locks(self) -> Path:
        return self.root / "locks"

    @property
    def ports_lock(self) -> Path:
        return self.locks / "ports.lock"

    def vm_lock(self, name: str) -> Path:
        # Outside the VM directory so that it outlives create and destroy.
        return self.locks / f"{name}.lock"

    def quarantine_lock(self, name: str) -> Path:
        return self.locks / f"{name}.quarantine.lock"

    def vm(self, name: str) -> VmPaths:
        return VmPaths(self.vms / name)


@dataclass(frozen=True)
class VmPaths:
    dir: Path

    @property
    def name(self) -> str:
        return self.dir.name

    @property
    def config(self) -> Path:
        return self.dir / "vm.json"

    @property
    def runtime(self) -> Path:
        return self.dir / "runtime.json"

    @property
    def params(self) -> Path:
        return self.dir / "params.json"

    @property
    def ssh_dir(self) -> Path:
        return self.dir / "ssh"

    @property
    def client_key(self) -> Path:
        return self.ssh_dir / "id_ed25519"

    @property
    def client_pubkey(self) -> Path:
        return self.ssh_dir / "id_ed25519.pub"

    @property
    def host_key(self) -> Path:
        return self.ssh_dir / "ssh_host_ed25519_key"

    @property
    def host_pubkey(self) -> Path:
        return self.ssh_dir / "ssh_host_ed25519_key.pub"

    @property
    def known_hosts(self) -> Path:
        return self.ssh_dir / "known_hosts"

    @property
    def secrets_dir(self) -> Path:
        return self.dir / "secrets"

    @property
    def agent_token(self) -> Path:
        return self.secrets_dir / "agent-token"

    @property
    def mcp_secrets(self) -> Path:
        return self.secrets_dir / "mcp.env"

    @property
    def qmp_socket(self) -> Path:
        return self.dir / "qmp.sock"

    @property
    def console_socket(self) -> Path:
        return self.dir / "console.sock"

    @property
    def serial_log(self) -> Path:
        return self.dir / "serial.log"

    @property
    def pidfile(self) -> Path:
        return self.dir / "qemu.pid"

    @property
    def runner_log(self) -> Path:
        return self.dir / "runner.log"

    @property
    def build_log(self) -> Path:
        return self.dir / "build.log"

    @property
    def events_log(self) -> Path:
        return self.dir / "events.log"

    @property
    def disk(self) -> Path:
        return self.dir / "disk.qcow2"

    @property
    def workspace_disk(self) -> Path:
        # --workspace-mode disk: the workspace's own disk (lib/qemu-args.nix).
        return self.dir / "workspace.qcow2"

    @property
    def disks(self) -> tuple[Path, ...]:
        """The VM's writable disks a snapshot belongs to."""
        return tuple(p for p in (self.disk, self.workspace_disk) if p.exists())

    @property
    def memory_file(self) -> Path:
        # The guest's RAM, a shared file mapping (lib/qemu-args.nix).
        return self.dir / "memory.ram"

    @property
    def snapshot_state(self) -> Path:
        # A suspended VM's memory and device state (QEMU's migration stream).
        return self.dir / "snapshot.vmstate"

    @property
    def snapshot_meta(self) -> Path:
        return self.dir / "snapshot.json"

    @property
    def guest_agent_socket(self) -> Path:
        # QEMU guest agent channel (virtio-serial), used to set the clock.
        return self.dir / "qga.sock"

    @property
    def runner_link(self) -> Path:
        return self.dir / "runner"

    @property
    def runner(self) -> Path:
        return self.runner_link / "bin" / "run-agent-vm"

    @property
    def workspace(self) -> Path:
        return self.dir / "workspace"

    @property
    def quarantine(self) -> Path:
        # agent-vm's own git directory for reading the workspace as data
        return self.dir / "quarantine"

    @property
    def pulls(self) -> Path:
        return self.dir / "pulls.json"

    @property
    def qemu_leftovers(self) -> tuple[Path, ...]:
        """What a QEMU that is gone leaves behind: its sockets and pidfile."""
        return (*self.sockets, self.pidfile)

    @property
    def sockets(self) -> tuple[Path, ...]:
        # One virtiofsd socket per virtiofs share (lib/qemu-args.nix).
        return (
            self.qmp_socket,
            self.console_socket,
            self.guest_agent_socket,
            *sorted(self.dir.glob("virtiofs-*.sock")),
        )
