"""Settings for every test layer.

The tests import this checkout's `python/agent_vm`, not whatever copy is
installed in the venv (./run-tests installs a non-editable copy, and the
flake's python-tests check has none), so an edit is tested at once. The
end-to-end tests run the installed CLI as a subprocess.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

_SRC = str(Path(__file__).resolve().parents[1] / "python")
if sys.path[:1] != [_SRC]:
    sys.path.insert(0, _SRC)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[Any]:
    """In CI (AGENT_VM_FORBID_SKIPS=1) a skipped or expected-to-fail test is a
    failure: nothing may pass by not running, and a known bug is fixed, not
    kept on record as green."""
    report = yield
    if os.environ.get("AGENT_VM_FORBID_SKIPS") == "1" and report.skipped:
        report.outcome = "failed"
        report.longrepr = f"skipped in a run that forbids skips: {report.longrepr}"
    return report
