"""What every command runs in: the state layout, the readiness timeout, the
flake to build from, the working directory, and the locks over them.

Kept apart from lifecycle so that read-only commands (status, list,
doctor) never import the module that changes state.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path

from .fsutil import ensure_private_dir, file_lock
from .paths import StateLayout


@dataclass
class Context:
    layout: StateLayout
    timeout: float = 120.0
    flake: str | None = None
    cwd: Path = field(default_factory=Path.cwd)

    def lock(self, name: str, wait: float = 0.0) -> contextlib.AbstractContextManager[None]:
        """The VM's lifecycle lock: one command at a time per VM."""
        ensure_private_dir(self.layout.root)
        return file_lock(self.layout.vm_lock(name), f"VM {name}", wait=wait)

    def ports_lock(self) -> contextlib.AbstractContextManager[None]:
        """Held from choosing ports until they are written down."""
        ensure_private_dir(self.layout.root)
        return file_lock(self.layout.ports_lock, "port allocation", wait=30.0)
