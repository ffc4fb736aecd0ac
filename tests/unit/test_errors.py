"""errors: one class per failure kind, each with its own exit code, and the
README's exit-code table is exactly errors.py."""

from __future__ import annotations

import re

import pytest
from agent_vm import errors
from agent_vm.errors import ALL_ERRORS, AgentVmError
from unit_fakes import ROOT


def error_classes() -> list[type[AgentVmError]]:
    return [
        c
        for c in vars(errors).values()
        if isinstance(c, type) and issubclass(c, AgentVmError) and c is not AgentVmError
    ]


def readme_table() -> dict[int, str]:
    """The `## Exit codes` table of the README: code -> meaning."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| *(\d+) *\| *(.+?) *\|$", section, flags=re.M)
    table = {int(code): meaning for code, meaning in rows}
    assert len(table) == len(rows), "a code appears twice in the README table"
    return table


def test_every_class_is_listed_in_all_errors() -> None:
    assert set(ALL_ERRORS) == set(error_classes())
    assert len(ALL_ERRORS) == len(set(ALL_ERRORS))


def test_every_class_has_a_distinct_exit_code_and_kind() -> None:
    codes = [c.exit_code for c in error_classes()]
    kinds = [c.kind for c in error_classes()]
    assert len(codes) == len(set(codes)), codes
    assert len(kinds) == len(set(kinds)), kinds
    for c in error_classes():
        # Own values, not the base class's, and valid exit statuses.
        assert c.exit_code != AgentVmError.exit_code, c
        assert 2 <= c.exit_code <= 255, c
        assert "exit_code" in vars(c) and "kind" in vars(c), c


def test_readme_table_is_errors_py() -> None:
    table = readme_table()
    assert table[0] == "success"
    assert table[1].startswith("internal error")
    exits = {errors.EXIT_INTERRUPTED, errors.EXIT_OUTPUT_CLOSED}
    assert set(table) - {0, 1} - exits == {c.exit_code for c in error_classes()}
    assert table[errors.EXIT_INTERRUPTED].startswith("interrupted")
    assert "reader went away" in table[errors.EXIT_OUTPUT_CLOSED]


@pytest.mark.parametrize(
    ("cls", "words"),
    [
        (errors.InvalidInput, "invalid input"),
        (errors.NotFound, "not found"),
        (errors.AlreadyExists, "already exists"),
        (errors.AlreadyRunning, "already running"),
        (errors.NotRunning, "not running"),
        (errors.StartTimeout, "timeout"),
        (errors.BuildFailed, "build failed"),
        (errors.MissingTool, "tool is missing"),
        (errors.GitError, "git"),
        (errors.CorruptState, "corrupt state"),
        (errors.PortUnavailable, "port unavailable"),
        (errors.UnsavedWork, "unsaved work"),
        (errors.Busy, "busy"),
        (errors.GuestFailed, "guest failed"),
        (errors.StopFailed, "stop failed"),
        (errors.CommandFailed, "external command failed"),
        (errors.HostNotReady, "doctor"),
        (errors.FlakeNotFound, "flake not found"),
    ],
)
def test_readme_meaning_matches_the_class(cls: type[AgentVmError], words: str) -> None:
    assert words in readme_table()[cls.exit_code].lower()


def test_an_error_carries_message_hint_and_detail() -> None:
    exc = errors.BuildFailed("nix build failed", hint="see the log", detail="line 1\nline 2")
    assert str(exc) == "nix build failed"
    assert (exc.message, exc.hint, exc.detail) == (
        "nix build failed",
        "see the log",
        "line 1\nline 2",
    )
    assert isinstance(exc, AgentVmError) and isinstance(exc, Exception)
