"""Security properties that need no running VM (those that do ride on
test_agent_auth's VM: one boot fewer)."""

from __future__ import annotations

import os
from pathlib import Path

from harness import Cli


def test_public_host_address_warns(cli: Cli, repo: Path) -> None:
    r = cli("create", "--host", "0.0.0.0", cwd=repo)
    assert "warning:" in r.stderr and "exposes" in r.stderr
    assert os.environ.get("NO_COLOR") is None or "\x1b[" not in r.stderr
