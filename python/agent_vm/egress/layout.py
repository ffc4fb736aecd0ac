"""Where the egress proxy's files live in a VM's state directory.

lib/egress.nix names the same files for the runner (the socket the relay
connects to and the CA certificate QEMU hands the guest); tests/nix checks
that the two agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# The guest's side of the one way out (QEMU's guestfwd), and what the guest
# is told to use as its proxy.
GUEST_PROXY_ADDRESS = "10.0.2.100"
GUEST_PROXY_PORT = 3128
GUEST_PROXY_URL = f"http://{GUEST_PROXY_ADDRESS}:{GUEST_PROXY_PORT}"
# The engine's socket, relative to the VM directory (the runner's, QEMU's
# and the engine's working directory: a socket path holds 107 bytes).
SOCKET_NAME = "egress/proxy.sock"
# Where both guests (modules/egress.nix, the Debian test guest) put the CA.
GUEST_CA_PATH = "/run/agent-vm/egress-ca.pem"


@dataclass(frozen=True)
class EgressPaths:
    vm_dir: Path

    @property
    def dir(self) -> Path:
        return self.vm_dir / "egress"

    @property
    def config(self) -> Path:
        return self.dir / "config.json"

    @property
    def secrets_index(self) -> Path:
        return self.dir / "secrets.json"

    @property
    def secrets_dir(self) -> Path:
        return self.dir / "secrets"

    def secret_value(self, name: str) -> Path:
        return self.secrets_dir / name

    @property
    def log(self) -> Path:
        return self.dir / "network.log"

    @property
    def engine_runtime(self) -> Path:
        return self.dir / "engine.json"

    @property
    def engine_log(self) -> Path:
        return self.dir / "engine.log"

    @property
    def socket(self) -> Path:
        return self.vm_dir / SOCKET_NAME

    @property
    def confdir(self) -> Path:
        """mitmproxy's: the per-VM CA (key 0600) is made here on first start."""
        return self.dir / "mitmproxy"

    @property
    def ca_cert(self) -> Path:
        return self.confdir / "mitmproxy-ca-cert.pem"

    @property
    def guest_env(self) -> Path:
        return self.dir / "guest.env"
