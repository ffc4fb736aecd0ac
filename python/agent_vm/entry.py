"""The console-script entry point.

Ctrl-C while the CLI is still importing or parsing arguments must not print
a traceback: until `cli.main` is ready to turn KeyboardInterrupt into exit
code 130 itself, SIGINT just exits with that code (nothing has been
touched yet, so there is nothing to clean up). After the command, a late
Ctrl-C is dropped rather than interrupting the interpreter's exit.
"""

from __future__ import annotations

import signal


def _early_interrupt(signum: int, frame: object) -> None:
    raise SystemExit(130)  # errors.EXIT_INTERRUPTED: nothing is imported yet


# At import, first thing, not in main(): the console script imports this
# module and then calls main(), and a Ctrl-C in between must not be a
# traceback either. Every statement before this one widens the window in
# which Python's own handler would print one.
signal.signal(signal.SIGINT, _early_interrupt)

import os  # noqa: E402
import sys  # noqa: E402


def main() -> None:
    # pydantic scans every installed distribution for plugins when the first
    # model is built (a tenth of `agent-vm list`'s time); we use none.
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    # A Ctrl-C during the imports waits until they are done: SystemExit
    # raised inside an extension module's initialisation (pydantic_core
    # importing datetime) is a Rust panic with a traceback, not an exit.
    # Unblocked, a pending SIGINT reaches the handler above: exit 130.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    from .cli import main as cli_main  # noqa: PLC0415 - imported under the handler

    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})

    try:
        code = cli_main()
        # Done: a Ctrl-C from now on must not become a traceback while the
        # interpreter exits. Blocked, it is simply dropped.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    except KeyboardInterrupt:
        # One that landed outside cli.main's own handling (as it returned).
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        sys.stderr.write("agent-vm: interrupted\n")
        code = 130
    sys.exit(code)
