"""Guest-written bytes made harmless for a terminal.

The serial log, the agent service's journal, commit subjects, file names and
patches all come from the guest. A terminal interprets escape sequences in
what it prints (moving the cursor, rewriting earlier lines, setting the
window title, on some terminals answering with text typed as input), so
every control character is shown escaped instead, as git and journalctl
do: `\\x1b[2J` stays visible text. Newlines and tabs are kept; bytes that
are not UTF-8 show as `\\xNN`; Unicode's invisible direction overrides,
which can make text read differently from what it is, are escaped too.

Raw bytes are given only to a pipe or a file, and only when asked (`--raw`).
"""

from __future__ import annotations

import codecs
import re
from typing import IO

from .errors import InvalidInput

# C0 except tab and newline, DEL, C1, and the bidirectional controls.
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]")


def _escape(m: re.Match[str]) -> str:
    code = ord(m.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def text(s: str) -> str:
    """`s` with every control character shown escaped."""
    return _UNSAFE.sub(_escape, s)


def line(s: str) -> str:
    """`s` escaped for one line of output: newlines and tabs too, so
    guest-chosen text cannot forge further lines."""
    return text(s).replace("\t", "\\x09").replace("\n", "\\x0a")


def data(b: bytes) -> str:
    """Bytes from the guest as safe text (invalid UTF-8 shown as \\xNN)."""
    return text(b.decode("utf-8", "backslashreplace"))


class Stream:
    """Sanitises a byte stream chunk by chunk (a character or an escape
    sequence split across chunks is handled like one that is not)."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")("backslashreplace")

    def feed(self, chunk: bytes, final: bool = False) -> bytes:
        return text(self._decoder.decode(chunk, final)).encode()


def check_raw(raw: bool, out: IO[str]) -> bool:
    """Whether to write raw bytes: only when asked and never to a terminal."""
    if raw and out.isatty():
        raise InvalidInput(
            "--raw writes the guest's bytes unchanged, which is only done to a pipe or a file",
            hint="redirect the output (> file, | less -R) or leave --raw out",
        )
    return raw
