#!/usr/bin/env python3
"""Egress proxy overhead: one HTTPS request through a VM's proxy, against the
same request made directly, in the same run.

    AGENT_VM_TEST_EGRESS_ENGINE=/opt/agent-vm-tests/venv-engine/bin/agent-vm-egress \\
        /opt/agent-vm-tests/venv/bin/python bench/egress.py [--runs 30]

No VM: the path QEMU takes for a guest connection is rebuilt around it: a
socket pair stands for the guest's TCP connection, socat is spawned per
connection as QEMU's guestfwd does, and it connects to the engine's socket.
The upstream is an HTTPS server on the host's loopback (a test CA), reached
through the proxy's test-only name mapping. Each request is a new
connection (TCP, CONNECT, TLS, GET, answer), the worst case for a proxy:

* direct: client -> upstream (TLS to the upstream);
* through the proxy, a host without a secret: CONNECT, then the guest's
  TLS passes through to the upstream untouched;
* through the proxy with injection: TLS ends at the proxy (the VM's CA),
  the header is added, a second TLS connection goes upstream.

Prints a Markdown table of medians and ratios for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import http.client
import os
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))

from agent_vm import store  # noqa: E402
from agent_vm.egress import secrets  # noqa: E402
from agent_vm.egress.layout import EgressPaths  # noqa: E402
from agent_vm.models import EgressConfig  # noqa: E402
from upstream import upstream  # noqa: E402

VALUE = "sk-bench-value"


class _Over(http.client.HTTPSConnection):
    """HTTPS over an already connected socket (the guest's side)."""

    def __init__(self, sock: socket.socket, host: str, ctx: ssl.SSLContext) -> None:
        super().__init__(host, 443, context=ctx, timeout=30)
        self._raw = sock

    def connect(self) -> None:
        self.sock = self._context.wrap_socket(self._raw, server_hostname=self.host)  # type: ignore[attr-defined]


def fetch(sock: socket.socket, host: str, ctx: ssl.SSLContext, headers: dict[str, str]) -> int:
    conn = _Over(sock, host, ctx)
    conn.request("GET", "/bench", headers=headers)
    resp = conn.getresponse()
    resp.read()
    conn.close()
    return resp.status


def connect_through(paths: EgressPaths, host: str) -> tuple[socket.socket, subprocess.Popen[bytes]]:
    guest, qemu_side = socket.socketpair()
    relay = subprocess.Popen(
        ["socat", "FD:0,shut-down", "UNIX-CONNECT:egress/proxy.sock"],  # as lib/egress.nix,
        stdin=qemu_side,
        stdout=qemu_side,
        cwd=paths.vm_dir,
    )
    qemu_side.close()
    guest.sendall(f"CONNECT {host}:443 HTTP/1.1\r\nHost: {host}:443\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += guest.recv(1)
    assert head.startswith(b"HTTP/1.1 200"), head
    return guest, relay


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=30)
    runs = ap.parse_args().runs
    engine = os.environ.get(
        "AGENT_VM_TEST_EGRESS_ENGINE", "/opt/agent-vm-tests/venv-engine/bin/agent-vm-egress"
    )
    work = Path(tempfile.mkdtemp(prefix="agent-vm-bench-egress-"))
    vm_dir = work / "vm"
    vm_dir.mkdir(mode=0o700)
    paths = EgressPaths(vm_dir)
    paths.dir.mkdir(mode=0o700)
    os.environ["BENCH_VALUE"] = VALUE
    secrets.add(paths, "API_KEY", ["secret.test"], "x-api-key", None, "BENCH_VALUE")
    store.save(
        paths.config,
        EgressConfig(
            vm="bench", branch="main", allow=["passthru.test"],
            secrets=secrets.load(paths).secrets,
        ),
    )  # fmt: skip
    with upstream(work / "upstream") as up:
        env = dict(os.environ) | {
            "AGENT_VM_EGRESS_TEST_HOSTS": up.mapping(),
            "SSL_CERT_FILE": str(up.trust_store(work)),
        }
        proc = subprocess.Popen(
            [
                "sh",
                "-c",
                '"$1" "$2" >>"$2/egress/engine.log" 2>&1 & wait',
                "sh",
                engine,
                str(vm_dir),
            ],
            env=env,
            start_new_session=True,
        )
        try:
            while not paths.engine_runtime.exists():
                time.sleep(0.05)
            test_ca = ssl.create_default_context(cafile=up.ca)
            vm_ca = ssl.create_default_context(cafile=paths.ca_cert)

            def direct() -> None:
                s = socket.create_connection(("127.0.0.1", up.https_port))
                assert fetch(s, "passthru.test", test_ca, {}) == 200

            def passthrough() -> None:
                s, relay = connect_through(paths, "passthru.test")
                assert fetch(s, "passthru.test", test_ca, {}) == 200
                relay.wait()

            def injected() -> None:
                s, relay = connect_through(paths, "secret.test")
                assert fetch(s, "secret.test", vm_ca, {}) == 200
                assert up.seen[-1]["x-api-key"] == VALUE
                relay.wait()

            results = {}
            for name, fn in (("direct", direct), ("proxy", passthrough), ("inject", injected)):
                fn()  # warm up
                samples = []
                for _ in range(runs):
                    t0 = time.perf_counter()
                    fn()
                    samples.append(time.perf_counter() - t0)
                results[name] = statistics.median(samples)
        finally:
            os.killpg(proc.pid, 9)
            proc.wait()
    d = results["direct"]
    print(f"egress benchmark {datetime.now(UTC):%Y-%m-%d}, {runs} requests each, medians\n")
    print("| measure | time | baseline (direct) | ratio |")
    print("| --- | --- | --- | --- |")
    print(f"| one HTTPS request, direct | {d * 1000:.1f} ms | - | 1 |")
    print(f"| through the proxy (TLS passed through) | {results['proxy'] * 1000:.1f} ms "
          f"| {d * 1000:.1f} ms | {results['proxy'] / d:.2f} |")  # fmt: skip
    inject = results["inject"]
    print(f"| through the proxy, secret injected (TLS terminated) | {inject * 1000:.1f} ms "
          f"| {d * 1000:.1f} ms | {inject / d:.2f} |")  # fmt: skip


if __name__ == "__main__":
    main()
