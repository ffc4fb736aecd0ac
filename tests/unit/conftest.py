"""Fixtures for the unit tests (the fakes themselves are in unit_fakes.py)."""

from unit_fakes import plumbum_through_subprocess

__all__ = ["plumbum_through_subprocess"]
