"""events: the reporter renders for a person (colour only on a terminal, and
never with NO_COLOR / --no-color) or as JSON lines, and every event about a
VM goes to its events.log."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
from agent_vm.events import REPORTER, Event, EventKind, Reporter, Severity, emit, warn
from unit_fakes import TtyStringIO, git, make_repo, run_cli

ANSI = re.compile(r"\x1b\[")


def emit_all(r: Reporter) -> None:
    for sev in Severity:
        r.emit(EventKind.STAGE, f"{sev.name} message", severity=sev, vm="main-0123abcd")
    r.status_line("progress …")
    r.clear_status()


def test_no_ansi_when_not_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    r = Reporter()
    out = io.StringIO()
    r.configure(debug=True, stream=out)
    emit_all(r)
    text = out.getvalue()
    assert not ANSI.search(text) and "\r" not in text
    assert "DEBUG message" in text and "error: [main-0123abcd] ERROR message" in text


def test_colour_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """The positive case, so the tests below would notice colour."""
    monkeypatch.delenv("NO_COLOR", raising=False)
    r = Reporter()
    out = TtyStringIO()
    r.configure(debug=True, stream=out)
    emit_all(r)
    assert ANSI.search(out.getvalue())


def test_no_colour_with_no_color_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    r = Reporter()
    out = TtyStringIO()
    r.configure(debug=True, stream=out)
    r.emit(EventKind.WARNING, "careful", severity=Severity.WARNING)
    assert out.getvalue() == "warning: careful\n"


def test_no_colour_with_no_color_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    r = Reporter()
    out = TtyStringIO()
    r.configure(debug=True, no_color=True, stream=out)
    r.emit(EventKind.WARNING, "careful", severity=Severity.WARNING)
    r.emit(EventKind.VM_STARTED, "ready", severity=Severity.NOTICE)
    assert not ANSI.search(out.getvalue())


def test_json_lines_parse_and_validate(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    r = Reporter()
    out = TtyStringIO()  # even on a terminal: JSON only
    r.configure(json_lines=True, debug=True, stream=out)
    emit_all(r)
    lines = out.getvalue().splitlines()
    assert len(lines) == len(Severity)
    for line in lines:
        data = json.loads(line)
        ev = Event.model_validate(data)
        assert ev.kind is EventKind.STAGE and ev.vm == "main-0123abcd"
        assert set(data) == {"time", "kind", "severity", "vm", "message", "data"}
    assert not ANSI.search(out.getvalue()) and "\r" not in out.getvalue()


def test_thresholds() -> None:
    for kwargs, shown in (
        ({}, {"WARNING", "ERROR"}),
        ({"verbose": True}, {"INFO", "NOTICE", "WARNING", "ERROR"}),
        ({"debug": True}, {s.name for s in Severity}),
    ):
        r = Reporter()
        out = io.StringIO()
        r.configure(stream=out, **kwargs)
        emit_all(r)
        assert {s.name for s in Severity if f"{s.name} message" in out.getvalue()} == shown


def test_events_log_per_vm(tmp_path: Path) -> None:
    r = Reporter()
    r.configure(stream=io.StringIO())
    r.attach("a-00000000", tmp_path / "a.log")
    r.attach("b-00000000", tmp_path / "b.log")
    r.emit(
        EventKind.VM_STARTING, "debug-level still logged", severity=Severity.DEBUG, vm="a-00000000"
    )
    r.emit(EventKind.PORT_ALLOCATED, "SSH port 2222", vm="b-00000000", port=2222)
    r.emit(EventKind.WARNING, "about no VM", severity=Severity.WARNING)
    a = [json.loads(x) for x in (tmp_path / "a.log").read_text().splitlines()]
    b = [json.loads(x) for x in (tmp_path / "b.log").read_text().splitlines()]
    assert [e["message"] for e in a] == ["debug-level still logged"]
    assert b[0]["kind"] == "port.allocated" and b[0]["data"] == {"port": 2222}


def test_events_log_of_a_removed_vm_is_ignored(tmp_path: Path) -> None:
    r = Reporter()
    r.configure(stream=io.StringIO())
    r.attach("gone", tmp_path / "no-such-dir" / "events.log")
    r.emit(EventKind.VM_DESTROYED, "destroyed", vm="gone")  # no exception


def test_module_helpers_use_the_global_reporter() -> None:
    out = io.StringIO()
    REPORTER.configure(verbose=True, stream=out)
    ev = emit(EventKind.VM_CREATED, "made", vm="x")
    w = warn("hmm")
    assert ev.severity is Severity.INFO and w.severity is Severity.WARNING
    assert out.getvalue() == "[x] made\nwarning: hmm\n"


# --- through the CLI -----------------------------------------------------------------


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    repo = make_repo(tmp_path / "repo")
    monkeypatch.chdir(repo)
    return repo


def cli_with_tty_stderr(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *argv: str
) -> str:
    """Run the CLI with a stderr that claims to be a terminal; return it."""
    fake = TtyStringIO()
    monkeypatch.setattr("sys.stderr", fake)
    res = run_cli(capsys, *argv)
    assert res.code == 0, fake.getvalue()
    return fake.getvalue()


def test_cli_warning_colour_and_no_color(
    repo: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`create --host 0.0.0.0` warns; the warning is coloured on a terminal
    unless --no-color or NO_COLOR, and never in --log-format json."""
    monkeypatch.delenv("NO_COLOR", raising=False)
    state = str(tmp_path / "state")
    run = [
        ("--no-color", "create", "--host", "0.0.0.0", "--branch", "main"),
        ("create", "--host", "0.0.0.0", "--branch", "b1"),
    ]
    for b in ("b1", "b2", "b3"):
        git(repo, "branch", b)
    err = cli_with_tty_stderr(capsys, monkeypatch, "--state-dir", state, *run[0])
    assert "exposes SSH and the agent" in err and not ANSI.search(err)
    err = cli_with_tty_stderr(capsys, monkeypatch, "--state-dir", state, *run[1])
    assert "exposes SSH and the agent" in err and ANSI.search(err)
    monkeypatch.setenv("NO_COLOR", "")
    err = cli_with_tty_stderr(
        capsys, monkeypatch, "--state-dir", state, "create", "--host", "0.0.0.0", "--branch", "b2"
    )
    assert "exposes SSH and the agent" in err and not ANSI.search(err)
    monkeypatch.delenv("NO_COLOR")
    err = cli_with_tty_stderr(
        capsys,
        monkeypatch,
        "--state-dir",
        state,
        "--log-format",
        "json",
        "-v",
        "create",
        "--host",
        "0.0.0.0",
        "--branch",
        "b3",
    )
    events = [Event.model_validate_json(line) for line in err.splitlines()]
    assert any(e.kind is EventKind.WARNING for e in events)
    assert any(e.kind is EventKind.VM_CREATED for e in events)


def test_cli_writes_events_log(
    repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state"
    res = run_cli(capsys, "--state-dir", str(state), "create")
    assert res.code == 0, res.err
    (vm_dir,) = (state / "vms").iterdir()
    kinds = [json.loads(x)["kind"] for x in (vm_dir / "events.log").read_text().splitlines()]
    assert kinds.count("port.allocated") == 2 and kinds[-1] == "vm.created"
    # Quiet by default: only warnings and errors reach stderr.
    assert res.err == ""
