"""Allowlist patterns: `name`, `*.suffix`, each with an optional `:port`.

A pattern without a port allows 443 and 80 (HTTPS and HTTP). `*.github.com`
matches `api.github.com` and `a.b.github.com`, not `github.com` itself: list
both when both are meant. Names are compared case-insensitively and without
a trailing dot, as DNS does.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

DEFAULT_PORTS = frozenset({443, 80})

# One DNS label: letters, digits, hyphens, not at either end.
_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
_NAME = re.compile(rf"^{_LABEL}(\.{_LABEL})*$")


class PatternError(ValueError):
    """Not an allowlist pattern; the message says why."""


def normalize_host(host: str) -> str:
    return host.strip().lower().rstrip(".")


@dataclass(frozen=True)
class Pattern:
    host: str  # a name, an IPv4 literal, or the suffix after "*."
    wildcard: bool
    port: int | None

    def matches(self, host: str, port: int) -> bool:
        if port not in ({self.port} if self.port is not None else DEFAULT_PORTS):
            return False
        h = normalize_host(host)
        if self.wildcard:
            return h.endswith("." + self.host)
        return h == self.host

    def __str__(self) -> str:
        text = ("*." if self.wildcard else "") + self.host
        return text if self.port is None else f"{text}:{self.port}"


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def parse(text: str) -> Pattern:
    """`api.example.com`, `*.example.com`, `example.com:8443`, `192.0.2.7:22`."""
    raw = text.strip()
    host, sep, port_text = raw.rpartition(":")
    if not sep:
        host, port = raw, None
    else:
        if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
            raise PatternError(f"{text!r}: the port must be 1-65535")
        port = int(port_text)
    host = normalize_host(host)
    wildcard = host.startswith("*.")
    if wildcard:
        host = host[2:]
    if "*" in host:
        raise PatternError(f"{text!r}: '*' is allowed only as a leading '*.'")
    if _is_ip(host):
        if wildcard:
            raise PatternError(f"{text!r}: an IP address cannot have a wildcard")
        return Pattern(host, False, port)
    if not _NAME.match(host):
        raise PatternError(f"{text!r} is not a host name (or *.suffix), optionally with :port")
    if wildcard and "." not in host:
        raise PatternError(f"{text!r}: a wildcard needs at least two labels after '*.'")
    return Pattern(host, wildcard, port)


def parse_all(texts: list[str]) -> list[Pattern]:
    return [parse(t) for t in texts]


def first_match(patterns: list[Pattern], host: str, port: int) -> Pattern | None:
    return next((p for p in patterns if p.matches(host, port)), None)


def read_file(text: str) -> list[str]:
    """An --allow-file: one pattern a line; blank lines and # comments skipped."""
    out = []
    for line in text.splitlines():
        pattern = line.split("#", 1)[0].strip()
        if pattern:
            out.append(pattern)
    return out
