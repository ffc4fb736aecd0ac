"""The nix internal-json progress reader, on a log captured from a real
failing `nix build --log-format internal-json` (Nix 2.8)."""

from __future__ import annotations

from pathlib import Path

from agent_vm.nixprogress import BuildProgress

DATA = Path(__file__).parent / "data" / "nix-internal-json-failed-build.txt"


def feed_all(p: BuildProgress) -> list[str]:
    return [p.line() for line in DATA.read_text().splitlines(keepends=True) if p.feed(line)]


def test_progress_lines_follow_the_build() -> None:
    p = BuildProgress()
    lines = feed_all(p)
    assert any(line.startswith("nix build: 0/2 derivations") for line in lines)
    assert any("building dep" in line for line in lines)
    assert any("building bad" in line for line in lines)
    assert (p.done, p.failed) == (1, 1)


def test_failure_tail_is_the_failing_derivations_log() -> None:
    p = BuildProgress()
    feed_all(p)
    assert p.last_failed == "bad"
    assert p.failure_tail() == "log of bad:\nfailing-now"


def test_nix_error_messages_are_kept_without_colour() -> None:
    p = BuildProgress()
    feed_all(p)
    assert any("builder for" in m and "failed with exit code 3" in m for m in p.messages)
    assert not any("\x1b" in m for m in p.messages)


def test_plain_lines_and_garbage_do_not_break_it() -> None:
    p = BuildProgress()
    assert p.feed("warning: something plain\n") is False
    assert p.feed("@nix {not json\n") is False
    assert p.messages == ["warning: something plain"]
    assert p.failure_tail() == "warning: something plain"
