"""What starting a VM needs from this host, checked before anything is
built or booted: the environment overrides are valid and the programs the
CLI runs are on PATH. (Without it a missing `ssh` was found only after a
whole boot, and a mistyped AGENT_VM_ACCEL was ignored.) QEMU, virtiofsd
and qemu-img are not looked up: the runner names them by store path.
"""

from __future__ import annotations

import os

from . import accel, params, tools
from .errors import InvalidInput

# nix builds the runner; ssh waits for the guest and logs in.
START_TOOLS = ("nix", "ssh")
ACCEL_VALUES = ("kvm", "tcg", "auto")


def check_start() -> None:
    """InvalidInput for a bad environment override, MissingTool for a
    program a start would run and cannot find."""
    forced = os.environ.get(accel.ENV)
    if forced and forced not in ACCEL_VALUES:
        raise InvalidInput(
            f"{accel.ENV} must be {', '.join(ACCEL_VALUES[:-1])} or {ACCEL_VALUES[-1]}, "
            f"not {forced!r}",
            hint=f"unset {accel.ENV} to let agent-vm choose",
        )
    params.workspace_share()  # InvalidInput for a bad AGENT_VM_SHARE
    for tool in START_TOOLS:
        tools.resolve(tool)
