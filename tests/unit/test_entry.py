"""entry: the console script; Ctrl-C before the CLI is ready is a quiet
exit 130, and the installed-style entry runs the CLI."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from agent_vm import entry
from unit_fakes import SRC


def test_early_interrupt_is_exit_130() -> None:
    with pytest.raises(SystemExit) as exc:
        entry._early_interrupt(signal.SIGINT, None)
    assert exc.value.code == 130


def test_console_script_runs_the_cli(tmp_path: Path) -> None:
    res = subprocess.run(
        [sys.executable, "-c", "from agent_vm.entry import main; main()", "--version"],
        env={**os.environ, "PYTHONPATH": str(SRC)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert res.returncode == 0 and res.stdout.startswith("agent-vm ")


def test_ctrl_c_while_starting_up_prints_no_traceback(tmp_path: Path) -> None:
    """SIGINT at some point during start-up: exit 130 (or done already), never a traceback.

    The signal is sent only once `agent_vm.entry` is loaded: before that
    line runs, no program can have a handler installed (the interpreter
    itself is still starting).
    """
    loaded = "import sys, agent_vm.entry as e; sys.stdout.write('loaded\\n'); sys.stdout.flush()"
    for delay in (0.0, 0.01, 0.03, 0.08):
        proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                f"{loaded}; e.main()",
                "--state-dir",
                str(tmp_path / "s"),
                "list",
            ],
            env={**os.environ, "PYTHONPATH": str(SRC)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        assert proc.stdout.readline() == "loaded\n"
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
        assert "Traceback" not in err, err
        assert proc.returncode in (0, 130), (proc.returncode, err)


def test_ctrl_c_as_the_command_finishes_prints_no_traceback(tmp_path: Path) -> None:
    """A SIGINT landing after the command returned, while the interpreter
    exits, is dropped: the command's own exit code, no traceback."""
    code = (
        "import os, signal, agent_vm.entry as e, agent_vm.cli as c\n"
        "real = c.main\n"
        "def main_then_ctrl_c(argv=None):\n"
        "    code = real(argv)\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "    return code\n"
        "c.main = main_then_ctrl_c\n"
        "e.main()\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code, "--state-dir", str(tmp_path / "s"), "list"],
        env={**os.environ, "PYTHONPATH": str(SRC)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert "Traceback" not in res.stderr, res.stderr
    assert res.returncode in (0, 130) and "no VMs" in res.stdout


def test_ctrl_c_during_the_imports_waits_for_them_then_exits_130(tmp_path: Path) -> None:
    """SIGINT raised as SystemExit inside an extension module's
    initialisation (pydantic_core importing datetime) was a Rust panic with a
    traceback. So the CLI's imports run with SIGINT blocked: one that comes
    meanwhile is held, and acted on (exit 130) once they are done."""
    code = (
        "import os, signal, sys, agent_vm.entry as e\n"
        "class Hook:\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name == 'agent_vm.cli':\n"
        "            blocked = signal.SIGINT in signal.pthread_sigmask(signal.SIG_BLOCK, [])\n"
        "            print('blocked' if blocked else 'open', flush=True)\n"
        "            os.kill(os.getpid(), signal.SIGINT)\n"
        "        return None\n"
        "sys.meta_path.insert(0, Hook())\n"
        "e.main()\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code, "--state-dir", str(tmp_path / "s"), "list"],
        env={**os.environ, "PYTHONPATH": str(SRC)},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert (res.returncode, res.stdout, res.stderr) == (130, "blocked\n", "")
