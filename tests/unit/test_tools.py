"""tools: the one place external programs run. Argument lists, never a
shell; failures are one-line typed errors."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import pytest
from agent_vm import tools
from agent_vm.errors import CommandFailed, MissingTool
from plumbum import local
from pytest_subprocess import FakeProcess


def test_failing_command_is_one_line(fp: FakeProcess) -> None:
    fp.register(["qemu-img", "info", "x"], returncode=1, stderr="a\nqemu-img: Could not open 'x'\n")
    with pytest.raises(CommandFailed) as exc:
        tools.run(["qemu-img", "info", "x"])
    assert exc.value.message == (
        "'qemu-img info' failed with exit code 1: qemu-img: Could not open 'x'"
    )
    assert exc.value.exit_code == 17
    assert json.dumps(exc.value.message).count("\\n") == 0


def test_failure_without_output(fp: FakeProcess) -> None:
    fp.register(["git", "x"], returncode=3)
    with pytest.raises(CommandFailed) as exc:
        tools.run(["git", "x"])
    assert exc.value.message == "'git x' failed with exit code 3"


def test_unchecked_failure_is_a_result(fp: FakeProcess) -> None:
    fp.register(["git", "x"], returncode=3, stdout="out\n", stderr="err\n")
    res = tools.run(["git", "x"], check=False)
    assert res == tools.Result(("git", "x"), 3, "out\n", "err\n") and not res.ok


def test_arguments_are_never_parsed_by_a_shell(tmp_path: Path) -> None:
    hostile = ["$(touch pwned)", "`touch pwned`", "a b", "'", '"', ";", "|", "*", ""]
    res = tools.run(["printf", "%s\\0", *hostile], cwd=tmp_path)
    assert res.stdout.split("\0")[:-1] == hostile
    assert not (tmp_path / "pwned").exists()


def test_cwd_and_env(tmp_path: Path) -> None:
    res = tools.run(
        ["sh", "-c", 'pwd; echo "$AGENT_VM_TEST_VAR"'],
        cwd=tmp_path,
        env={"AGENT_VM_TEST_VAR": "v a l"},
    )
    assert res.stdout == f"{tmp_path}\nv a l\n"


def test_timeout_is_a_command_failure() -> None:
    with pytest.raises(CommandFailed, match=r"'sleep' did not finish within 0\.2s"):
        tools.run(["sleep", "5"], timeout=0.2)


def test_missing_tool_names_the_package(tmp_path: Path) -> None:
    with local.env(PATH=str(tmp_path)):
        for tool, pkg in (
            ("qemu-img", "qemu-utils"),
            ("qemu-system-x86_64", "qemu-system-x86"),
            ("ssh", "openssh-client"),
            ("frobnicate", "frobnicate"),
        ):
            with pytest.raises(MissingTool) as exc:
                tools.run([tool, "--version"])
            assert exc.value.hint == f"install {pkg}"
            assert exc.value.exit_code == 9
            assert not tools.have(tool)
    assert tools.have("sh")


def test_query_answers_with_a_result_whatever_the_exit(fp: FakeProcess) -> None:
    fp.register(["git", "rev-parse", "x"], returncode=128, stdout="", stderr="fatal: no\n")
    assert tools.query(["git", "rev-parse", "x"]) == tools.Result(
        ("git", "rev-parse", "x"), 128, "", "fatal: no\n"
    )


def test_query_keeps_bytes_that_are_not_utf8(tmp_path: Path) -> None:
    name = os.fsdecode(b"caf\xe9")
    (tmp_path / name).mkdir()
    res = tools.query(["ls"], cwd=tmp_path)
    assert res.ok and res.stdout == name + "\n"
    assert (tmp_path / res.stdout.rstrip("\n")).is_dir()


def test_query_of_a_missing_tool_names_the_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(MissingTool) as exc:
        tools.query(["ssh", "-V"])
    assert exc.value.hint == "install openssh-client"


def test_stream_hands_over_stderr_lines_in_order() -> None:
    seen: list[str] = []
    res = tools.stream(["sh", "-c", "echo one >&2; echo out; echo two >&2; exit 4"], seen.append)
    assert seen == ["one\n", "two\n"]
    assert (res.returncode, res.stdout, res.stderr) == (4, "out\n", "one\ntwo\n")


def test_stream_with_env() -> None:
    seen: list[str] = []
    res = tools.stream(["sh", "-c", 'echo "$X" >&2'], seen.append, env={"X": "y"})
    assert seen == ["y\n"] and res.ok


def test_spawn_is_in_its_own_session(tmp_path: Path) -> None:
    log_path = tmp_path / "log"
    with open(log_path, "wb") as log:
        proc = tools.spawn(["sh", "-c", 'echo "$X"; echo err >&2'], log=log, env={"X": "spawned"})
    # A new session: no SIGHUP from our terminal. (If it already finished,
    # the output below still shows it ran.)
    with contextlib.suppress(ProcessLookupError):
        assert os.getsid(proc.pid) == proc.pid
    assert proc.wait(timeout=10) == 0
    assert sorted(log_path.read_text().splitlines()) == ["err", "spawned"]


def test_run_foreground_returns_the_exit_code() -> None:
    assert tools.run_foreground(["sh", "-c", "exit 7"]) == 7
    assert tools.run_foreground(["true"], env={"A": "b"}) == 0
