"""A flake.lock that the user's Nix refuses: recognising Nix's NAR hash
mismatch and saying how to re-lock.

flake.lock records a narHash per input. When the Nix at hand computes a
different one for the same locked revision (one public report says Nix
2.31 does for the nixpkgs revision this project pins), every build stops
with an error that does not say what to do; `up` and `doctor` explain it.
"""

from __future__ import annotations

import re

from .nixprogress import strip_ansi

# Nix's wording (NixOS/nix, src/libfetchers/fetchers.cc; since 2.32 also
# src/libexpr/paths.cc):
#   2.19 and later: NAR hash mismatch in input '<input>', expected '<hash>' but got '<hash>'
#   2.4 to 2.18:    NAR hash mismatch in input '<input>' (<path>), expected '<hash>', got '<hash>'
_MISMATCH = re.compile(r"NAR hash mismatch in input '([^']*)'")

RELOCK_COMMAND = "nix flake lock --update-input nixpkgs"


def refused_input(nix_output: str) -> str | None:
    """The input whose locked narHash Nix refused, if its output says so
    (without the query part, e.g. `github:NixOS/nixpkgs/<rev>`)."""
    m = _MISMATCH.search(strip_ansi(nix_output))
    return m.group(1).split("?", 1)[0] if m else None


def local_checkout(flake: str) -> str | None:
    """The directory of a flake reference that names one on this host."""
    if flake.startswith("path:"):
        flake = flake.removeprefix("path:")
    elif not flake.startswith("/"):
        return None
    return flake.split("?", 1)[0]


def mismatch_message(nix_input: str) -> str:
    return (
        f"Nix refuses the agent-vm flake's lock: {nix_input} does not have "
        "the narHash flake.lock records"
    )


def relock_hint(flake: str) -> str:
    """How to re-lock the flake `flake` (a checkout can be re-locked in
    place; anything else through a checkout)."""
    checkout = local_checkout(flake)
    if checkout is None or checkout.startswith("/nix/store/"):
        where = "in a checkout of agent-vm, then set AGENT_VM_FLAKE=path:<checkout>"
    else:
        where = f"in {checkout}"
    return f"re-lock nixpkgs with your Nix: '{RELOCK_COMMAND}' {where} (README: Re-locking nixpkgs)"
