"""Settings for every test layer."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest


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
