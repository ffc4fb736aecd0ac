"""status and list: what a VM is doing, from its records and live probes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from . import snapshot, store
from .context import Context
from .errors import AgentVmError
from .models import Network, StageTiming, VmState
from .paths import VmPaths
from .state import effective

STATUS_SCHEMA_VERSION = 1


class EgressStatus(BaseModel):
    """The egress proxy of a running `--network allow` VM."""

    model_config = ConfigDict(defer_build=True)

    proxy_running: bool
    allowed: int = Field(description="Requests and tunnels allowed since the VM started")
    denied: int = Field(description="Requests and CONNECTs refused since the VM started")
    reason: str | None = Field(default=None, description="Why the guest reaches nothing")


class VmStatus(BaseModel):
    """`agent-vm status --json` (one VM) and each row of `list --json`."""

    model_config = ConfigDict(defer_build=True)

    schema_version: int = STATUS_SCHEMA_VERSION
    name: str
    branch: str | None = None
    state: VmState | str
    reason: str | None = None
    pid: int | None = None
    uptime_seconds: float | None = None
    host_address: str | None = None
    ssh_port: int | None = None
    agent_port: int | None = None
    ssh_reachable: bool | None = None
    agent_reachable: bool | None = None
    agent_servers: list[str] | None = None
    workspace: str | None = None
    repo: str | None = None
    stages: list[StageTiming] = []
    error: str | None = None
    network: str | None = None
    egress: EgressStatus | None = None
    snapshot_bytes: int | None = None
    snapshot_age_seconds: float | None = None


class VmList(BaseModel):
    """`agent-vm list --json`."""

    model_config = ConfigDict(defer_build=True)

    schema_version: int = STATUS_SCHEMA_VERSION
    vms: list[VmStatus]


def status(
    ctx: Context, vm: VmPaths, probe: bool = True, tolerate_corrupt: bool = False
) -> VmStatus:
    """The VM's status; a corrupt state file raises unless `tolerate_corrupt`

    (then the VM is reported as "broken", so `list` keeps showing the others).
    """
    try:
        cfg = store.load_config(vm)
        rt = store.load_runtime(vm)
    except AgentVmError as exc:
        if not tolerate_corrupt:
            raise
        return VmStatus(name=vm.name, state="broken", error=exc.message)
    state, reason = effective(rt, vm.dir, ctx.layout.vm_lock(vm.name))
    running = state == VmState.RUNNING
    ssh_port = rt.ssh_port if rt.ssh_port is not None else cfg.ssh_port
    agent_port = rt.agent_port if rt.agent_port is not None else cfg.agent_port
    st = VmStatus(
        name=cfg.name,
        branch=cfg.branch,
        state=state,
        reason=reason if state in (VmState.FAILED, VmState.SUSPENDED) else None,
        pid=rt.pid if running or state in (VmState.STARTING, VmState.STOPPING) else None,
        host_address=cfg.host_address,
        ssh_port=ssh_port,
        agent_port=agent_port,
        workspace=cfg.workspace,
        repo=cfg.repo,
        stages=rt.stages,
        network=cfg.network.value,
    )
    if running and cfg.network == Network.ALLOW:
        st.egress = _egress(vm, rt.started_at)
    if state == VmState.SUSPENDED:
        _add_snapshot(st, vm)
    if running and rt.started_at is not None:
        st.uptime_seconds = round((datetime.now(UTC) - rt.started_at).total_seconds(), 1)
    if probe and running:
        # Only a probing status of a running VM pays for ssh and http.client.
        from . import agent_secrets, health, ssh  # noqa: PLC0415

        st.ssh_reachable = ssh.login_works(vm, cfg, ssh_port, timeout=3)[0]
        servers = health.agent_status(cfg.host_address, agent_port, agent_secrets.read_token(vm))
        st.agent_reachable = servers is not None
        st.agent_servers = servers
    return st


def _egress(vm: VmPaths, since: datetime | None) -> EgressStatus:
    from .egress import netlog, process  # noqa: PLC0415 - only for allow VMs
    from .egress.layout import EgressPaths  # noqa: PLC0415

    counts = netlog.counts_since(EgressPaths(vm.dir).log, since)
    up = process.running(vm.dir) is not None
    return EgressStatus(
        proxy_running=up,
        allowed=counts.allowed,
        denied=counts.denied,
        reason=None
        if up
        else "the egress proxy is not running: the guest reaches nothing (fail closed); "
        f"'agent-vm restart {vm.name}' starts a new one",
    )


def _add_snapshot(st: VmStatus, vm: VmPaths) -> None:
    try:
        snap = snapshot.load(vm)
    except AgentVmError as exc:
        st.error = exc.message
        return
    st.snapshot_bytes = snap.size_bytes
    st.snapshot_age_seconds = round(snapshot.age_seconds(snap), 1)


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def list_all(ctx: Context) -> list[VmStatus]:
    rows = []
    for name in store.vm_names(ctx.layout):
        rows.append(status(ctx, ctx.layout.vm(name), probe=False, tolerate_corrupt=True))
    return rows


def render_status(st: VmStatus) -> str:
    def yn(v: bool | None) -> str:
        return "-" if v is None else "yes" if v else "no"

    lines = [
        f"VM:        {st.name}",
        f"branch:    {st.branch}",
        f"state:     {st.state}" + (f" ({st.reason})" if st.reason else ""),
    ]
    if st.error:
        lines.append(f"error:     {st.error}")
    if st.pid:
        lines.append(f"pid:       {st.pid}")
    if st.uptime_seconds is not None:
        lines.append(f"uptime:    {int(st.uptime_seconds)}s")
    if st.ssh_port:
        lines.append(
            f"ssh:       {st.host_address}:{st.ssh_port} (reachable: {yn(st.ssh_reachable)})"
        )
        lines.append(
            f"agent:     http://{st.host_address}:{st.agent_port}/ "
            f"(reachable: {yn(st.agent_reachable)})"
        )
    if st.network:
        lines.append(f"network:   {st.network}" + _render_egress(st.egress))
    if st.snapshot_bytes is not None and st.snapshot_age_seconds is not None:
        lines.append(
            f"snapshot:  {st.snapshot_bytes / 2**20:.0f} MiB, taken "
            f"{_age(st.snapshot_age_seconds)} ago ('agent-vm resume' continues it)"
        )
    if st.workspace:
        lines.append(f"workspace: {st.workspace}")
    if st.stages:
        lines.append("stages:    " + ", ".join(f"{s.stage} {s.seconds:.1f}s" for s in st.stages))
    return "\n".join(lines)


def _render_egress(e: EgressStatus | None) -> str:
    if e is None:
        return ""
    counts = f"{e.allowed} allowed, {e.denied} denied since start"
    if e.proxy_running:
        return f" (proxy running; {counts}; 'agent-vm logs --network')"
    return f" (PROXY DOWN: {e.reason}; {counts})"


def render_list(rows: list[VmStatus]) -> str:
    if not rows:
        return "no VMs"
    header = ("NAME", "BRANCH", "STATE", "SSH", "AGENT")
    table = [header] + [
        (r.name, r.branch or "?", str(r.state), str(r.ssh_port or "-"), str(r.agent_port or "-"))
        for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in table
    )


def as_json(obj: BaseModel | list[VmStatus]) -> Any:
    if isinstance(obj, list):
        obj = VmList(vms=obj)
    return obj.model_dump(mode="json")
