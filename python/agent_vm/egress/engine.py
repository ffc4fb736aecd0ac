"""`agent-vm-egress VM_DIR`: the VM's egress proxy, started by its runner.

mitmproxy (an existing, well-kept engine: HTTP/1, HTTP/2, CONNECT, TLS
interception with a generated CA, upstream verification) driven by
`addon.py`. Its command line holds the VM directory and nothing else;
secrets are read from files inside the process. It exits when its parent
(QEMU, which the runner `exec`s into) goes, so a stopped or killed VM leaves
no proxy behind; when it dies, the relay cannot connect and the guest
reaches nothing.

mitmproxy pins most of its dependencies, so it lives in an environment of
its own (the Nix package's, or `pip install 'agent-vm[egress]'`), never in
the CLI's import path: `status` and `list` do not pay for it.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from .. import procs, store
from ..errors import AgentVmError, InvalidInput
from ..models import EgressConfig
from . import secrets
from .layout import EgressPaths
from .patterns import parse, parse_all
from .policy import LoadedSecret, Policy

VM_DIR_ENV = "AGENT_VM_EGRESS_VM_DIR"
PARENT_ENV = "AGENT_VM_EGRESS_PARENT"
# Test-only: {"name": port} sends that name to 127.0.0.1:port instead of
# resolving it (the end-to-end tests' upstream servers). Nothing else uses it.
TEST_HOSTS_ENV = "AGENT_VM_EGRESS_TEST_HOSTS"
HOST_TRUST_STORE = "/etc/ssl/certs/ca-certificates.crt"


def load_policy(paths: EgressPaths) -> Policy:
    config = store.load(paths.config, EgressConfig)
    loaded = tuple(
        LoadedSecret(
            name=s.name,
            domains=tuple(parse(d) for d in s.domains),
            header=s.header,
            value=secrets.value_of(paths, s),
        )
        for s in config.secrets
    )
    return Policy(
        vm=config.vm,
        allow=tuple(parse_all(config.allow)),
        secrets=loaded,
        state_dir=config.state_dir,
    )


def test_hosts() -> dict[str, int]:
    raw = os.environ.get(TEST_HOSTS_ENV)
    if not raw:
        return {}
    mapping = json.loads(raw)
    if not isinstance(mapping, dict) or not all(
        isinstance(k, str) and isinstance(v, int) for k, v in mapping.items()
    ):
        raise InvalidInput(f"{TEST_HOSTS_ENV} must be a JSON object of name: port")
    return {k.lower(): v for k, v in mapping.items()}


def host_trust_store() -> str | None:
    """Upstream TLS is checked against the host's store ($SSL_CERT_FILE first)."""
    for candidate in (os.environ.get("SSL_CERT_FILE"), HOST_TRUST_STORE):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


def mitmdump_args(paths: EgressPaths) -> list[str]:
    args = [
        "--quiet",
        # An ephemeral loopback port; only the bridge's connections are served.
        "--mode",
        "regular@127.0.0.1:0",
        "--set",
        f"confdir={paths.confdir}",
        # No upstream connection before the addon has decided.
        "--set",
        "connection_strategy=lazy",
        "--set",
        "termlog_verbosity=warn",
        "--scripts",
        str(Path(__file__).with_name("mitmscript") / "load.py"),
    ]
    trust = host_trust_store()
    if trust is not None:
        args += ["--set", f"ssl_verify_upstream_trusted_ca={trust}"]
    return args


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0].startswith("-"):
        sys.stderr.write("usage: agent-vm-egress VM_DIR (started by the VM's runner)\n")
        return 2
    # The runner names itself (its $$): a runner killed while we were still
    # starting must not leave us behind, re-parented to init for good.
    parent = int(os.environ.get(PARENT_ENV) or os.getppid())
    if not procs.die_with_parent(parent):
        sys.stderr.write("agent-vm-egress: the runner that started this proxy is gone\n")
        return 0
    os.environ[PARENT_ENV] = str(parent)
    vm_dir = Path(args[0]).absolute()
    os.umask(0o077)
    paths = EgressPaths(vm_dir)
    try:
        load_policy(paths)
        test_hosts()
    except AgentVmError as exc:
        sys.stderr.write(f"agent-vm-egress: {exc.message}\n")
        return 2
    try:
        from mitmproxy.tools.main import mitmdump  # noqa: PLC0415
    except ImportError:
        sys.stderr.write(
            "agent-vm-egress: mitmproxy is not installed (pip install 'agent-vm[egress]')\n"
        )
        return 9
    paths.confdir.mkdir(mode=0o700, exist_ok=True)
    os.chdir(vm_dir)  # the socket is bound by its relative name
    os.environ[VM_DIR_ENV] = str(vm_dir)
    mitmdump(mitmdump_args(paths))
    return 0
