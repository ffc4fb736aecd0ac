"""The pydantic models: the single source of truth for every JSON file.

* `VmConfig`  -> `<vm>/vm.json`      what the user asked for (create/update)
* `Runtime`   -> `<vm>/runtime.json` what is running now (start/stop/status)
* `VmParams`  -> `<vm>/params.json`  what Nix reads to build the runner
                                     (camelCase, see docs/contract.md)
* `Secrets`   -> `<vm>/egress/secrets.json`   which secrets the proxy injects
                                     (names, domains, sources; never values)
* `EgressConfig` -> `<vm>/egress/config.json` what the egress proxy enforces
* `EngineRuntime` -> `<vm>/egress/engine.json` the running proxy's pid
* `NetworkDecision` -> `<vm>/egress/network.log` one JSON line per decision
* `Snapshot`  -> `<vm>/snapshot.json` what a suspended VM's saved state
                                     belongs to (suspend/resume)
"""

from __future__ import annotations

import ipaddress
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

# The allowed values, once: the models, the CLI's argument types and the
# flag-naming checks in lifecycle all read these (the NixOS host module's
# option types are checked against them in tests/nix).
PORT_RANGE = (1024, 65535)
MEMORY_MIB_RANGE = (256, 1024 * 1024)
CORES_RANGE = (1, 256)
DISK_MIB_RANGE = (512, 16 * 1024 * 1024)

Port = Annotated[int, Field(ge=PORT_RANGE[0], le=PORT_RANGE[1])]
MemoryMiB = Annotated[int, Field(ge=MEMORY_MIB_RANGE[0], le=MEMORY_MIB_RANGE[1])]
Cores = Annotated[int, Field(ge=CORES_RANGE[0], le=CORES_RANGE[1])]
DiskMiB = Annotated[int, Field(ge=DISK_MIB_RANGE[0], le=DISK_MIB_RANGE[1])]


class _Strict(BaseModel):
    # defer_build: a model's validator is made when first used, so a command
    # pays only for the models it touches (start-up time of `status`/`list`).
    model_config = ConfigDict(extra="forbid", validate_assignment=True, defer_build=True)


class Network(StrEnum):
    OPEN = "open"
    NONE = "none"
    # Only through the VM's egress proxy, to the names on its allowlist.
    ALLOW = "allow"


class WorkspaceMode(StrEnum):
    # A host directory shared into the guest (9p or virtiofs).
    SHARE = "share"
    # A virtio disk of the VM's own, filled once at create; work leaves it
    # only as a git bundle the host verifies (diff/pull).
    DISK = "disk"


class VmState(StrEnum):
    STOPPED = "stopped"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    FAILED = "failed"
    # Saving the whole VM to its snapshot file; then SUSPENDED: QEMU gone,
    # the snapshot and the disks it belongs to in the VM dir.
    SUSPENDING = "suspending"
    SUSPENDED = "suspended"


def check_host(value: str) -> str:
    try:
        addr = ipaddress.ip_address(value)
    except ValueError as exc:
        raise ValueError(f"not an IP address: {value!r}") from exc
    if addr.version != 4:
        raise ValueError("only IPv4 host addresses are supported")
    return str(addr)


# A new VM's egress allowlist when none is given: the guest's own package
# manager works (its Nix substituter), nothing else. docs/architecture.md
# ("Decisions") says why.
DEFAULT_ALLOW = ("cache.nixos.org",)

# Where the search for a free port starts when the user gives none.
SSH_PORT_START = 2222
AGENT_PORT_START = 8000


class VmSettings(_Strict):
    """What a user chooses for a VM, once: the defaults, ranges, command-line
    flags and help of `create`/`up`/`update` are derived from these fields,
    and the NixOS host module's option defaults are checked against them
    (tests/nix). VmConfig extends it, so vm.json stays flat."""

    host_address: str = Field(
        default="127.0.0.1",
        description="host address the forwarded ports bind to",
        json_schema_extra={"flag": "--host"},
    )
    memory_mib: MemoryMiB = Field(
        default=2048, description="guest memory in MiB", json_schema_extra={"flag": "--memory"}
    )
    cores: Cores = Field(
        default=2, description="guest CPU cores", json_schema_extra={"flag": "--cores"}
    )
    disk_size_mib: DiskMiB = Field(
        default=8192,
        description="guest disk size in MiB; a larger size grows the existing disk at the next "
        "start (and the guest's root file system as it boots); a smaller one is refused while "
        "the disk exists ('reset' deletes it)",
        json_schema_extra={"flag": "--disk-size"},
    )
    ephemeral: bool = Field(
        default=False,
        description="throw the guest disk away at every stop",
        json_schema_extra={"flag": "--ephemeral"},
    )
    network: Network = Field(
        # Locked down: docs/architecture.md ("Decisions") says why.
        default=Network.ALLOW,
        description="outbound network: allow (only the allowlist, through the VM's egress "
        "proxy), open (NAT, anything) or none (nothing)",
        json_schema_extra={"flag": "--network"},
    )
    user_module: str | None = Field(
        default=None,
        description="NixOS module of yours to add to the guest (packages, MCP servers)",
        json_schema_extra={"flag": "--config"},
    )
    workspace_mode: WorkspaceMode = Field(
        default=WorkspaceMode.SHARE,
        description="where the workspace lives: share (a host directory shared in) or disk "
        "(a disk of the VM's own; work leaves it through diff/pull)",
        json_schema_extra={"flag": "--workspace-mode"},
    )

    @field_validator("host_address")
    @classmethod
    def _valid_host(cls, value: str) -> str:
        return check_host(value)

    @classmethod
    def flag(cls, field_name: str) -> str:
        """The command-line flag of a setting."""
        extra = cls.model_fields[field_name].json_schema_extra
        assert isinstance(extra, dict)
        return str(extra["flag"])

    @classmethod
    def int_range(cls, field_name: str) -> tuple[int, int]:
        """The allowed values of an integer setting."""
        meta = cls.model_fields[field_name].metadata
        lo = next(getattr(m, "ge") for m in meta if hasattr(m, "ge"))  # noqa: B009
        hi = next(getattr(m, "le") for m in meta if hasattr(m, "le"))  # noqa: B009
        return int(lo), int(hi)


class VmConfig(VmSettings):
    """What a VM is: written by create/update, read by everything."""

    version: Literal[1] = 1
    name: str
    branch: str
    repo: str = Field(description="Absolute path of the source repository")
    commit: str = Field(description="Commit the workspace was made from")
    workspace: str = Field(description="Absolute path shared into the guest")
    workspace_owned: bool = Field(
        description="True when agent-vm made the workspace (per-branch copy) and may delete it"
    )
    ssh_port: Port
    agent_port: Port
    ssh_port_pinned: bool = False
    agent_port_pinned: bool = False
    allow: list[str] = Field(
        default_factory=list,
        description="Egress allowlist for network=allow (--allow; update: --add-allow)",
    )
    created_at: datetime

    @field_validator("allow")
    @classmethod
    def _valid_patterns(cls, value: list[str]) -> list[str]:
        from .egress.patterns import parse  # noqa: PLC0415 - a leaf module, no cycle

        return [str(parse(p)) for p in value]

    def settings(self) -> VmSettings:
        return VmSettings.model_validate(self.model_dump(include=set(VmSettings.model_fields)))


class StageTiming(_Strict):
    """How long one readiness stage took."""

    stage: Literal["build", "qemu", "restore", "clock", "ssh", "agent"]
    seconds: float
    ok: bool


class Runtime(_Strict):
    """What is running: the only record of pids and live ports."""

    version: Literal[1] = 1
    state: VmState = VmState.STOPPED
    pid: int | None = None
    pid_start_time: int | None = Field(
        default=None, description="Field 22 of /proc/PID/stat: tells our QEMU from a reused pid"
    )
    ssh_port: int | None = None
    agent_port: int | None = None
    started_at: datetime | None = None
    ready_at: datetime | None = None
    stopped_at: datetime | None = None
    stages: list[StageTiming] = Field(default_factory=list)
    reason: str | None = Field(default=None, description="Why the VM is failed, if it is")
    starter_pid: int | None = Field(
        default=None, description="The agent-vm process that started the VM (while starting)"
    )
    starter_start_time: int | None = None


class DiskStamp(_Strict):
    """What a disk file was when a snapshot was taken. A write through any
    path changes ctime, which no unprivileged process can set back, and a
    copy is another inode; the header hash catches a disk swapped for one
    with the same metadata (a restored backup made with preserved times)."""

    file: str = Field(description="Name in the VM dir")
    size: int
    inode: int
    mtime_ns: int
    ctime_ns: int
    header_sha256: str = Field(description="sha256 of the file's first MiB")


class Snapshot(_Strict):
    """`<vm>/snapshot.json`: the saved state in `<vm>/snapshot.vmstate` and
    everything a resume must find unchanged."""

    version: Literal[1] = 1
    taken_at: datetime
    size_bytes: int = Field(description="Bytes the state file occupies on disk")
    suspend_seconds: float
    runner: str = Field(description="The runner (store path) whose QEMU saved it")
    accel: Literal["kvm", "tcg"]
    memory_mib: int
    disks: list[DiskStamp]
    workspace: dict[str, str] | None = Field(
        default=None,
        description="A disk workspace's refs as the guest's bundle named them when it was "
        "suspended (ids checked; the objects are in the quarantine): diff, pull and destroy "
        "read it while the guest cannot change anything",
    )


class _Camel(_Strict):
    model_config = ConfigDict(
        extra="forbid",
        alias_generator=to_camel,
        populate_by_name=True,
        frozen=True,
        defer_build=True,
    )


class WorkspaceShare(_Camel):
    host_path: str
    tag: str = "workspace"
    mount_point: str = "/workspace"
    security_model: Literal["none", "mapped-xattr"] = "none"


# Linux ids are 32-bit; 2**32 - 1 means "no id". LDAP, AD and systemd-homed
# users routinely have ids above 65535.
GuestId = Annotated[int, Field(ge=1, le=2**32 - 2)]


# The guest user SSH logs in as (the guest module's agent-vm.user.name).
GUEST_USER = "dev"


class GuestUser(_Camel):
    name: str = GUEST_USER
    uid: GuestId
    gid: GuestId


class VmParams(_Camel):
    """The parameters file Nix reads with builtins.fromJSON (docs/contract.md)."""

    version: Literal[2] = 2
    name: str
    state_dir: str
    host_address: str
    ssh_port: Port
    agent_port: Port
    guest_agent_port: int = Field(default=8000, ge=1, le=65535)
    memory_mib: MemoryMiB = Field(alias="memoryMiB")
    cores: Cores
    disk_size_mib: DiskMiB = Field(alias="diskSizeMiB")
    network: Network
    share: Literal["9p", "virtiofs"] = "9p"
    workspace_mode: WorkspaceMode = WorkspaceMode.SHARE
    workspace: WorkspaceShare
    user: GuestUser
    user_module: str | None = None

    @field_validator("host_address")
    @classmethod
    def _valid_host(cls, value: str) -> str:
        return check_host(value)

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True, indent=2) + "\n"


# --- egress: the per-VM proxy (agent_vm.egress) -------------------------------

# An environment variable name: what the guest sees the placeholder under.
SecretName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")]
# An HTTP header field name (RFC 9110 token).
HeaderName = Annotated[str, Field(pattern=r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}$")]


class Secret(_Strict):
    """One credential the proxy adds on the way out; its value is never here."""

    name: SecretName
    domains: list[str] = Field(min_length=1, description="Allowlist patterns it is sent to")
    header: HeaderName | None = Field(
        default=None, description="Header set to the value on every request to its domains"
    )
    file: str | None = Field(
        default=None,
        description="Absolute path read at each start (--from-file); "
        "null: the value is stored in egress/secrets/NAME (--from-env)",
    )

    @field_validator("domains")
    @classmethod
    def _valid_domains(cls, value: list[str]) -> list[str]:
        from .egress.patterns import parse  # noqa: PLC0415

        return [str(parse(p)) for p in value]

    @field_validator("file")
    @classmethod
    def _absolute(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("/"):
            raise ValueError("the secret's file must be an absolute path")
        return value


class Secrets(_Strict):
    """`<vm>/egress/secrets.json`: the VM's secrets, without their values."""

    version: Literal[1] = 1
    secrets: list[Secret] = Field(default_factory=list)


class EgressConfig(_Strict):
    """`<vm>/egress/config.json`: written by `start`, read by the proxy."""

    version: Literal[1] = 1
    vm: str
    branch: str
    allow: list[str]
    secrets: list[Secret] = Field(default_factory=list)
    state_dir: str | None = Field(
        default=None, description="--state-dir for the command the 403 suggests; null: default"
    )


class EngineRuntime(_Strict):
    """`<vm>/egress/engine.json`: written by the proxy once it listens."""

    version: Literal[1] = 1
    pid: int
    pid_start_time: int | None
    started_at: datetime


Decision = Literal["allowed", "denied", "injected"]


class NetworkDecision(_Strict):
    """One line of `<vm>/egress/network.log` (`agent-vm logs --network --json`)."""

    time: datetime
    method: str
    host: str
    port: int
    decision: Decision
    reason: str
    path: str | None = None
    status: int | None = Field(default=None, description="The upstream's (or our 403's) status")
    bytes: int | None = Field(
        default=None,
        description="Bytes through the proxy both ways: request and response bodies for "
        "HTTP, everything for a tunnel (logged when it closes); null if unknown",
    )
    secrets: list[str] = Field(default_factory=list, description="Names of secrets injected")


class Pull(_Strict):
    """One `agent-vm pull`: what reached the source repository."""

    ref: str = Field(description="The branch of the source repository that was set")
    commit: str = Field(description="What it was set to")
    head: str | None = Field(description="The workspace's HEAD at the time")
    worktree_tree: str | None = Field(
        default=None,
        description="The work tree's tree, when its uncommitted files were committed "
        "(--include-uncommitted): destroy knows that state is saved",
    )
    at: datetime


class PullLog(_Strict):
    """`<vm>/pulls.json`: every pull from this VM's workspace."""

    version: Literal[1] = 1
    pulls: list[Pull] = Field(default_factory=list)
