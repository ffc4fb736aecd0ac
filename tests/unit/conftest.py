"""Fixtures for the unit tests (the fakes and helpers are in unit_fakes.py)."""

from unit_fakes import (
    ctx,
    plumbum_through_subprocess,
    reset_reporter,
    restore_signals,
)

__all__ = ["ctx", "plumbum_through_subprocess", "reset_reporter", "restore_signals"]
