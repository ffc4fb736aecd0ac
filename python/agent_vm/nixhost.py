"""What this host's Nix is and can do, for `doctor`: its version against
the one nixpkgs needs, the experimental features its configuration
enables, and whether it fetches the agent-vm flake's locked inputs."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from . import flakelock, tools
from .errors import AgentVmError
from .nixbuild import NIX_FEATURES
from .nixprogress import strip_ansi

# The oldest Nix the pinned nixpkgs (nixos-25.11) evaluates with: its
# lib/minfeatures.nix asks for builtins.nixVersion >= 2.18 (until August
# 2025 the same number was lib/minver.nix). Flakes alone need only 2.4.
NIXPKGS_MIN_NIX = (2, 18)
NEEDED_FEATURES = ("nix-command", "flakes")
# The first fetch of nixpkgs downloads ~50 MB.
FETCH_TIMEOUT = 600.0

_VERSION = re.compile(r"(\d+)\.(\d+)[\w.+-]*")
_DISABLED = re.compile(r"experimental Nix feature '([\w-]+)' is disabled")


@dataclass(frozen=True)
class NixVersion:
    line: str  # `nix --version`'s first line, e.g. "nix (Nix) 2.31.2"
    number: str  # "2.31.2"
    major: int
    minor: int

    @property
    def new_enough(self) -> bool:
        return (self.major, self.minor) >= NIXPKGS_MIN_NIX


def version() -> NixVersion | None:
    """`nix --version`, or None if it gives none. The number is the last
    one on the line: forks put their own first ("nix (Determinate Nix
    3.8.2) 2.30.1")."""
    try:
        res = tools.run(["nix", "--version"], check=False, timeout=10)
    except AgentVmError:
        return None
    lines = (res.stdout.strip() or res.stderr.strip()).splitlines()
    found = list(_VERSION.finditer(lines[0])) if lines else []
    if not found:
        return None
    last = found[-1]
    return NixVersion(lines[0], last.group(0), int(last.group(1)), int(last.group(2)))


def disabled_features(v: NixVersion) -> list[str] | None:
    """Which of nix-command and flakes the Nix configuration leaves off
    (agent-vm turns them on for its own calls; `nix run .#agent-vm` and
    `nix flake check` need them on); None when Nix does not say."""
    if "Determinate Nix" in v.line:
        return []  # both are stable there, not experimental
    off: list[str] = []
    res = tools.run(["nix", "show-config"], check=False, timeout=30)
    if not res.ok:
        m = _DISABLED.search(res.stderr)
        if m is None or m.group(1) != "nix-command":
            return None
        off.append("nix-command")
        argv = ["nix", "--extra-experimental-features", "nix-command", "show-config"]
        res = tools.run(argv, check=False, timeout=30)
        if not res.ok:
            return None
    enabled: set[str] = set()
    for line in res.stdout.splitlines():
        key, _, value = line.partition(" = ")
        if key.strip() == "experimental-features":
            enabled = set(value.split())
    off += [f for f in NEEDED_FEATURES if f not in enabled and f not in off]
    return off


@dataclass(frozen=True)
class InputsFetch:
    ok: bool
    inputs: list[str]  # the flake's direct inputs, when fetched
    refused: str | None  # an input whose locked narHash Nix refused
    error: str  # Nix's last error line, when not ok


def fetch_inputs(flake: str) -> InputsFetch:
    """Fetch the flake and its locked inputs into the store, as the first
    `agent-vm up` would: `nix flake archive` checks each narHash."""
    argv = ["nix", "--extra-experimental-features", NIX_FEATURES, "flake", "archive", "--json"]
    try:
        res = tools.run([*argv, flake], check=False, timeout=FETCH_TIMEOUT)
    except AgentVmError as exc:
        return InputsFetch(False, [], None, exc.message)
    if not res.ok:
        text = strip_ansi(res.stderr)
        errors = [x for x in text.splitlines() if "error:" in x]
        last = errors[-1] if errors else (text.strip().splitlines() or [""])[-1]
        return InputsFetch(False, [], flakelock.refused_input(text), last.strip())
    try:
        inputs = sorted(json.loads(res.stdout).get("inputs", {}))
    except (ValueError, AttributeError):
        inputs = []
    return InputsFetch(True, inputs, None, "")
