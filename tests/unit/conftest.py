"""Fixtures for the unit tests (the fakes and helpers are in unit_fakes.py).

The unit tests exercise this checkout's `python/agent_vm`, not whatever
copy is installed in the venv (./run-tests installs a non-editable copy, so
an edit would otherwise go untested until the next reinstall).
"""

import sys
from pathlib import Path

_SRC = str(Path(__file__).resolve().parents[2] / "python")
if sys.path[:1] != [_SRC]:
    sys.path.insert(0, _SRC)
for _mod in [m for m in sys.modules if m == "agent_vm" or m.startswith("agent_vm.")]:
    del sys.modules[_mod]  # pragma: no cover - only if a plugin imported it first

from unit_fakes import (  # noqa: E402
    plumbum_through_subprocess,
    reset_reporter,
    restore_signals,
)

__all__ = ["plumbum_through_subprocess", "reset_reporter", "restore_signals"]
