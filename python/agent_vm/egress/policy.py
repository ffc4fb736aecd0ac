"""What the egress proxy does with one CONNECT or one request. Pure: the
mitmproxy addon asks, this module answers, the unit tests ask too.

The rules, in order:
1. the destination (host, port) must match the allowlist or a secret's
   domains (a secret's domains are allowed: it is pointless otherwise);
2. a request that carries a secret's placeholder anywhere (URL, headers,
   body) goes only to that secret's domains: elsewhere it is refused;
3. to a secret's domains, the placeholder in any header value becomes the
   value, and the secret's `--header`, if it has one, is set to the value;
   a secret is never sent over plain HTTP (refused instead).
TLS is terminated only for destinations some secret is for (`intercept`);
everything else passes through as an opaque tunnel.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field

from ..models import Decision
from .patterns import Pattern, first_match

PLACEHOLDER_PREFIX = "agent-vm-placeholder-"


def placeholder(name: str) -> str:
    """What the guest sees instead of the secret's value."""
    return PLACEHOLDER_PREFIX + name


@dataclass(frozen=True)
class LoadedSecret:
    name: str
    domains: tuple[Pattern, ...]
    header: str | None
    value: str

    def covers(self, host: str, port: int) -> bool:
        return first_match(list(self.domains), host, port) is not None


@dataclass(frozen=True)
class Policy:
    vm: str
    allow: tuple[Pattern, ...]
    secrets: tuple[LoadedSecret, ...] = ()
    state_dir: str | None = None

    def allowed_by(self, host: str, port: int) -> Pattern | None:
        hit = first_match(list(self.allow), host, port)
        if hit is not None:
            return hit
        for s in self.secrets:
            hit = first_match(list(s.domains), host, port)
            if hit is not None:
                return hit
        return None

    def secrets_for(self, host: str, port: int) -> list[LoadedSecret]:
        return [s for s in self.secrets if s.covers(host, port)]

    def intercept(self, host: str, port: int) -> bool:
        """Terminate TLS? Only where a secret may have to be added."""
        return bool(self.secrets_for(host, port))

    def allow_command(self, host: str, port: int) -> str:
        """The command that would allow this destination (for the 403 page)."""
        target = host if port in (80, 443) else f"{host}:{port}"
        argv = ["agent-vm"]
        if self.state_dir is not None:
            argv += ["--state-dir", self.state_dir]
        argv += ["update", self.vm, "--add-allow", target]
        return shlex.join(argv)


@dataclass
class Verdict:
    decision: Decision
    reason: str
    # Header edits for an injected request: (name, new value); and which
    # placeholders to replace in every header value.
    set_headers: list[tuple[str, str]] = field(default_factory=list)
    replacements: list[tuple[str, str]] = field(default_factory=list)
    secrets: list[str] = field(default_factory=list)

    @property
    def denied(self) -> bool:
        return self.decision == "denied"


def _not_allowed(policy: Policy, host: str, port: int) -> Verdict:
    return Verdict("denied", f"{host}:{port} is not on VM {policy.vm}'s allowlist")


def connect_verdict(policy: Policy, host: str, port: int) -> Verdict:
    hit = policy.allowed_by(host, port)
    if hit is None:
        return _not_allowed(policy, host, port)
    return Verdict("allowed", f"matches {hit}")


def request_verdict(
    policy: Policy,
    *,
    scheme: str,
    host: str,
    port: int,
    url: str,
    header_values: list[str],
    body: bytes,
) -> Verdict:
    hit = policy.allowed_by(host, port)
    if hit is None:
        return _not_allowed(policy, host, port)
    carried = [s for s in policy.secrets if _carries(placeholder(s.name), url, header_values, body)]
    for s in carried:
        if not s.covers(host, port):
            return Verdict(
                "denied",
                f"the request carries the placeholder of secret {s.name}, "
                f"and {host}:{port} is not one of its domains",
            )
    here = policy.secrets_for(host, port)
    injecting = [s for s in here if s.header is not None or s in carried]
    if not injecting:
        return Verdict("allowed", f"matches {hit}")
    if scheme != "https":
        names = ", ".join(s.name for s in injecting)
        return Verdict("denied", f"secret {names} is sent over HTTPS only, not {scheme}")
    return Verdict(
        "injected",
        f"matches {hit}",
        set_headers=[(s.header, s.value) for s in injecting if s.header is not None],
        replacements=[(placeholder(s.name), s.value) for s in injecting],
        secrets=[s.name for s in injecting],
    )


def _carries(marker: str, url: str, header_values: list[str], body: bytes) -> bool:
    return marker in url or any(marker in v for v in header_values) or marker.encode() in body


def deny_page(policy: Policy, method: str, host: str, port: int, reason: str) -> str:
    """The body of the 403: which VM, which destination, why, and the fix."""
    lines = [
        f"agent-vm: the egress proxy of VM {policy.vm} refused {method} {host}:{port}.",
        f"Why: {reason}.",
    ]
    if "allowlist" in reason:
        lines += [
            "To allow it, run this on the host (it applies at once):",
            f"  {policy.allow_command(host, port)}",
        ]
    return "\n".join(lines) + "\n"
