"""The mitmproxy addon: the egress policy applied to live traffic.

Imported only inside the engine (`agent-vm-egress`), where mitmproxy is.
Each hook asks `policy` and acts: a 403 with the explanation for a denied
CONNECT or request, TLS passed through untouched unless a secret may be
added, the secret added to requests bound for its domains (and scrubbed
from what comes back), one log line per decision.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mitmproxy import ctx, http

from .. import procs
from ..errors import AgentVmError
from ..fsutil import atomic_write
from ..models import EngineRuntime, NetworkDecision
from . import netlog
from .bridge import Bridge
from .engine import PARENT_ENV, VM_DIR_ENV, load_policy, test_hosts
from .layout import SOCKET_NAME, EgressPaths
from .patterns import normalize_host
from .policy import Policy, Verdict, connect_verdict, deny_page, placeholder, request_verdict

PARENT_POLL = 0.5


@dataclass
class _Tunnel:
    opened: datetime
    host: str
    port: int
    reason: str


class EgressAddon:
    def __init__(self) -> None:
        self.paths = EgressPaths(Path(os.environ[VM_DIR_ENV]))
        self.parent = int(os.environ[PARENT_ENV])  # set by engine.main
        self.policy = load_policy(self.paths)
        self._config_stamp = self._stamp()
        self.test_hosts = test_hosts()
        self.bridge: Bridge | None = None
        self.tunnels: dict[int, _Tunnel] = {}
        self._tasks: list[asyncio.Task[None]] = []

    # --- configuration ------------------------------------------------------

    def _stamp(self) -> tuple[int, int, int] | None:
        try:
            st = self.paths.config.stat()
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def current(self) -> Policy:
        """The policy, reloaded when `update`/`secret` rewrote the config."""
        stamp = self._stamp()
        if stamp != self._config_stamp:
            self._config_stamp = stamp
            try:
                self.policy = load_policy(self.paths)
            except AgentVmError as exc:
                # Keep enforcing the last good policy rather than none.
                ctx.log.warn(f"agent-vm: config not reloaded: {exc.message}")
        return self.policy

    # --- lifetime -------------------------------------------------------------

    async def running(self) -> None:
        listen = ctx.master.addons.get("proxyserver").listen_addrs()
        host, port = next((a[0], a[1]) for a in listen if ":" not in a[0])
        self.bridge = Bridge(Path(SOCKET_NAME), (host, port), self._bridge_closed)
        await self.bridge.start()
        pid = os.getpid()
        atomic_write(
            self.paths.engine_runtime,
            EngineRuntime(
                pid=pid, pid_start_time=procs.start_time(pid), started_at=datetime.now(UTC)
            ).model_dump_json(indent=2)
            + "\n",
        )
        self._tasks.append(asyncio.create_task(self._watch_parent()))

    async def _watch_parent(self) -> None:
        # The runner execs QEMU, whose child we are: when it exits, so do we
        # (the kernel's SIGTERM, procs.die_with_parent, usually comes first).
        while os.getppid() == self.parent:
            await asyncio.sleep(PARENT_POLL)
        ctx.master.shutdown()

    async def done(self) -> None:
        if self.bridge is not None:
            await self.bridge.stop()
        with contextlib.suppress(FileNotFoundError):
            self.paths.engine_runtime.unlink()

    # --- who may talk to us -----------------------------------------------------

    def client_connected(self, client: Any) -> None:
        if self.bridge is None or not self.bridge.is_ours(client.peername):
            client.error = "agent-vm egress: only this VM's relay may use this proxy"

    # --- CONNECT ------------------------------------------------------------------

    def http_connect(self, flow: http.HTTPFlow) -> None:
        policy = self.current()
        host, port = normalize_host(flow.request.host), flow.request.port
        verdict = connect_verdict(policy, host, port)
        if verdict.denied:
            self._deny(flow, policy, verdict, "CONNECT", host, port)
            return
        peer = flow.client_conn.peername
        if peer is not None:
            self.tunnels[peer[1]] = _Tunnel(datetime.now(UTC), host, port, verdict.reason)

    def _bridge_closed(self, source_port: int, nbytes: int) -> None:
        tunnel = self.tunnels.pop(source_port, None)
        if tunnel is not None:
            self._log(
                NetworkDecision(
                    time=tunnel.opened,
                    method="CONNECT",
                    host=tunnel.host,
                    port=tunnel.port,
                    decision="allowed",
                    reason=tunnel.reason,
                    bytes=nbytes,
                )
            )

    def tls_clienthello(self, data: Any) -> None:
        address = data.context.server.address
        if address is None or not self.current().intercept(normalize_host(address[0]), address[1]):
            # No secret for it: the guest's TLS goes through untouched.
            data.ignore_connection = True

    # --- requests (plain HTTP, or inside a tunnel we terminate) ---------------------

    def _verdict(self, flow: http.HTTPFlow, body: bytes) -> tuple[Policy, Verdict]:
        policy = self.current()
        req = flow.request
        verdict = request_verdict(
            policy,
            scheme=req.scheme,
            host=normalize_host(req.host),
            port=req.port,
            url=req.url,
            header_values=list(req.headers.values()),
            body=body,
        )
        return policy, verdict

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        # Before the body is read: refuse early what the headers already decide.
        policy, verdict = self._verdict(flow, b"")
        if verdict.denied:
            req = flow.request
            self._deny(flow, policy, verdict, req.method, normalize_host(req.host), req.port)

    def request(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None:
            return
        req = flow.request
        policy, verdict = self._verdict(flow, req.raw_content or b"")
        if verdict.denied:
            self._deny(flow, policy, verdict, req.method, normalize_host(req.host), req.port)
            return
        for marker, value in verdict.replacements:
            for key in {k for k, v in req.headers.items(multi=True) if marker in v}:
                values = [v.replace(marker, value) for v in req.headers.get_all(key)]
                req.headers.set_all(key, values)
        for key, value in verdict.set_headers:
            req.headers[key] = value
        flow.metadata["agent_vm"] = verdict

    def response(self, flow: http.HTTPFlow) -> None:
        verdict = flow.metadata.get("agent_vm")
        if not isinstance(verdict, Verdict):
            return  # our own 403, logged when it was made
        if verdict.secrets:
            self._scrub(flow, verdict)
        req, resp = flow.request, flow.response
        assert resp is not None
        size = len(req.raw_content or b"") + len(resp.raw_content or b"")
        self._log_flow(flow, verdict, verdict.reason, status=resp.status_code, bytes=size)

    def _scrub(self, flow: http.HTTPFlow, verdict: Verdict) -> None:
        """An upstream that echoes the secret must not hand it to the guest."""
        resp = flow.response
        assert resp is not None
        for marker, value in verdict.replacements:
            for key in {k for k, v in resp.headers.items(multi=True) if value in v}:
                resp.headers.set_all(
                    key, [v.replace(value, marker) for v in resp.headers.get_all(key)]
                )
            # Decoded (gzip and the like), re-encoded with a fixed length.
            content = resp.get_content(strict=False)
            if content and value.encode() in content:
                resp.set_content(content.replace(value.encode(), marker.encode()))

    def error(self, flow: http.HTTPFlow) -> None:
        verdict = flow.metadata.get("agent_vm")
        if isinstance(verdict, Verdict):
            why = flow.error.msg if flow.error else "?"
            self._log_flow(flow, verdict, f"{verdict.reason}; upstream failed: {why}")

    def _log_flow(self, flow: http.HTTPFlow, verdict: Verdict, reason: str, **extra: Any) -> None:
        req = flow.request
        self._log(
            NetworkDecision(
                time=datetime.fromtimestamp(req.timestamp_start, UTC),
                method=req.method,
                host=normalize_host(req.host),
                port=req.port,
                path=req.path,
                decision=verdict.decision,
                reason=reason,
                secrets=verdict.secrets,
                **extra,
            )
        )

    # --- the connection out -------------------------------------------------------

    def server_connect(self, data: Any) -> None:
        """The last word before any connection leaves the host."""
        address = data.server.address
        if address is None:
            data.server.error = "agent-vm egress: no destination"
            return
        host, port = normalize_host(address[0]), address[1]
        if self.current().allowed_by(host, port) is None:
            data.server.error = f"agent-vm egress: {host}:{port} is not allowed"
            return
        mapped = self.test_hosts.get(host)
        if mapped is not None:
            data.server.address = ("127.0.0.1", mapped)

    def server_connected(self, data: Any) -> None:
        # A name on the list that resolves to the host itself (DNS
        # rebinding) must not reach the host's own services or a cloud
        # metadata address. IP literals on the list are taken as meant.
        peer = data.server.peername
        if peer is None:
            return
        ip = ipaddress.ip_address(peer[0])
        address = data.server.address
        host = normalize_host(address[0]) if address else ""
        # (The test mapping's rewritten address is a literal too.)
        literal = host == str(ip)
        if (ip.is_loopback or ip.is_link_local or ip.is_unspecified) and not literal:
            data.server.error = f"agent-vm egress: {host} resolved to {ip}, which is refused"

    # --- answers and records ----------------------------------------------------------

    def _deny(  # noqa: PLR0917 - what the 403 and its log line name
        self,
        flow: http.HTTPFlow,
        policy: Policy,
        verdict: Verdict,
        method: str,
        host: str,
        port: int,
    ) -> None:
        body = deny_page(policy, method, host, port, verdict.reason)
        flow.response = http.Response.make(
            403,
            body.encode(),
            {"Content-Type": "text/plain; charset=utf-8", "X-Agent-VM-Egress": "denied"},
        )
        self._log(
            NetworkDecision(
                time=datetime.now(UTC),
                method=method,
                host=host,
                port=port,
                path=None if method == "CONNECT" else flow.request.path,
                decision="denied",
                reason=verdict.reason,
                status=403,
            )
        )

    def _log(self, entry: NetworkDecision) -> None:
        netlog.append(self.paths.log, entry)


__all__ = ["EgressAddon", "placeholder"]
