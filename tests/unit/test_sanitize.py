"""sanitize: guest-written bytes reach the terminal escaped, never interpreted;
raw only to a pipe or file and only when asked."""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

import pytest
from agent_vm import cli, console, sanitize
from agent_vm.errors import InvalidInput, StartTimeout
from agent_vm.fsutil import ensure_private_dir
from agent_vm.paths import StateLayout
from unit_fakes import TtyStringIO, run_cli, vm_config, write_vm

ATTACKS = {
    "\x1b[2J\x1b[H": "\\x1b[2J\\x1b[H",  # clear the screen
    "\x1b]0;owned\x07": "\\x1b]0;owned\\x07",  # set the window title
    "\x1b]52;c;cHduZWQ=\x07": "\\x1b]52;c;cHduZWQ=\\x07",  # write the clipboard
    "ok\rFAKE": "ok\\x0dFAKE",  # overwrite the line
    "\x9b31m": "\\x9b31m",  # C1 CSI
    "del\x7f": "del\\x7f",
    "nul\x00": "nul\\x00",
    "abc\u202edcba": "abc\\u202edcba",  # right-to-left override
    "\u2066isolate\u2069": "\\u2066isolate\\u2069",
}


@pytest.mark.parametrize(("raw", "shown"), ATTACKS.items())
def test_control_characters_are_shown_escaped(raw: str, shown: str) -> None:
    assert sanitize.text(raw) == shown


def test_text_that_is_safe_is_unchanged() -> None:
    safe = "a line\n\tindented: fé ünï çødé 日本 \\x1b (a literal backslash)\n"
    assert sanitize.text(safe) == safe


def test_bytes_that_are_not_utf8_show_as_hex() -> None:
    assert sanitize.data(b"ok \xff\xfe \x1b[0m\n") == "ok \\xff\\xfe \\x1b[0m\n"


def test_a_stream_split_anywhere_gives_the_same_text() -> None:
    data = "naïve \x1b]0;t\x07 日本\n".encode() + b"\xff end"
    whole = sanitize.data(data)
    for cut in range(len(data)):
        s = sanitize.Stream()
        got = s.feed(data[:cut]) + s.feed(data[cut:]) + s.feed(b"", final=True)
        assert got.decode() == whole, cut
    assert "\x1b" not in whole


def test_raw_only_when_asked_and_never_to_a_terminal() -> None:
    assert sanitize.check_raw(False, TtyStringIO()) is False
    assert sanitize.check_raw(False, io.StringIO()) is False
    assert sanitize.check_raw(True, io.StringIO()) is True
    with pytest.raises(InvalidInput) as exc:
        sanitize.check_raw(True, TtyStringIO())
    assert exc.value.exit_code == 2 and "pipe or a file" in exc.value.message


def test_error_messages_escape_guest_text(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The serial log's tail in a readiness error, a guest's stderr in a
    message: all of it goes through cli's one error printer."""

    def fails(*_: object) -> int:
        raise StartTimeout(
            "branch \x1b[31mx\x1b[0m timed out",
            hint="see \x1b]8;;http://evil\x07log",
            detail="[  1.0] booting\n\x1b]0;pwned\x07\x1b[2J",
        )

    monkeypatch.setitem(cli.COMMANDS, "list", fails)
    res = run_cli(capsys, "--state-dir", str(tmp_path), "list")
    assert res.code == 7
    assert "\x1b" not in res.err and "\x07" not in res.err
    assert "[  1.0] booting\n\\x1b]0;pwned\\x07\\x1b[2J\n" in res.err
    assert "agent-vm: error: branch \\x1b[31mx\\x1b[0m timed out" in res.err
    assert "hint: see \\x1b]8;;http://evil\\x07log" in res.err


SERIAL = b"[ 0.1] Linux version\n\x1b[2J\x1b]0;pwned\x07login: \xff\n"


def _stopped_vm_with_log(state: Path) -> None:
    layout = StateLayout(state)
    ensure_private_dir(layout.root)
    vm = write_vm(layout, vm_config())
    vm.serial_log.write_bytes(SERIAL)


def test_logs_are_escaped(capsysbinary: pytest.CaptureFixture[bytes], tmp_path: Path) -> None:
    _stopped_vm_with_log(tmp_path)
    code = cli.main(["--state-dir", str(tmp_path), "logs", "main-0123abcd"])
    out = capsysbinary.readouterr().out
    assert code == 0
    assert out == b"[ 0.1] Linux version\n\\x1b[2J\\x1b]0;pwned\\x07login: \\xff\n"


def test_logs_raw_to_a_pipe_are_the_bytes(
    capsysbinary: pytest.CaptureFixture[bytes], tmp_path: Path
) -> None:
    _stopped_vm_with_log(tmp_path)
    assert cli.main(["--state-dir", str(tmp_path), "logs", "--raw", "main-0123abcd"]) == 0
    assert capsysbinary.readouterr().out == SERIAL


def test_logs_raw_to_a_terminal_is_refused(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _stopped_vm_with_log(tmp_path)
    monkeypatch.setattr("sys.stdout", TtyStringIO())
    code = cli.main(["--state-dir", str(tmp_path), "logs", "--raw", "main-0123abcd"])
    assert code == 2
    assert "--raw" in capsys.readouterr().err


def test_log_follow_escapes_each_chunk(tmp_path: Path) -> None:
    log = tmp_path / "serial.log"
    log.write_bytes(SERIAL)
    r, w = os.pipe()
    console.follow(log, stop=time.monotonic() + 0.5, out=w, transform=sanitize.Stream().feed)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        out = f.read()
    assert b"\x1b" not in out and b"\\x1b]0;pwned\\x07" in out


def test_the_previous_boots_logs_are_escaped(
    capsysbinary: pytest.CaptureFixture[bytes], tmp_path: Path
) -> None:
    _stopped_vm_with_log(tmp_path)
    vm = StateLayout(tmp_path).vm("main-0123abcd")
    vm.serial_log.rename(vm.dir / "serial.log.1")
    assert cli.main(["--state-dir", str(tmp_path), "logs", "--previous", "main-0123abcd"]) == 0
    out = capsysbinary.readouterr().out
    assert b"\x1b" not in out and b"\\x1b]0;pwned\\x07login: \\xff" in out
