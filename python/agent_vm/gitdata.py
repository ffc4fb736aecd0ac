"""The text formats of a git directory, parsed as data.

A workspace's `.git` is written by the guest, so nothing in it is handed to
git as a repository. The quarantine reads the few files it needs (HEAD,
refs, packed-refs, reflogs, shallow) with these parsers, which accept only
well-formed object ids and ref names and report everything else.
"""

from __future__ import annotations

import hashlib
import re
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

# Object format -> length of an object id in hex.
HEX_LENGTH = {"sha1": 40, "sha256": 64}
_HEX = re.compile(r"[0-9a-f]+")

# git check-ref-format's rules (refs.c, check_refname_component), without
# its options: every component is refused that git would refuse.
_BAD_REF_CHARS = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]")
MAX_REF_NAME = 1024


def is_object_id(text: str, object_format: str) -> bool:
    return len(text) == HEX_LENGTH[object_format] and _HEX.fullmatch(text) is not None


def is_null_id(text: str) -> bool:
    return set(text) == {"0"}


def is_valid_ref_name(name: str) -> bool:
    """A full ref name git itself accepts (`refs/…`), nothing looser."""
    try:
        if not name.startswith("refs/") or len(name.encode()) > MAX_REF_NAME:
            return False
    except UnicodeEncodeError:  # a file name that was not UTF-8
        return False
    if _BAD_REF_CHARS.search(name) or "@{" in name or ".." in name or name.endswith((".", "/")):
        return False
    return all(
        part and not part.startswith(".") and not part.endswith(".lock") for part in name.split("/")
    )


@dataclass(frozen=True)
class SymRef:
    """`ref: <target>`: a symbolic ref (HEAD on a branch)."""

    target: str


RefValue = str | SymRef


def parse_ref_file(data: bytes, object_format: str) -> RefValue | None:
    """A loose ref or HEAD: an object id or `ref: refs/…`; None if malformed."""
    try:
        text = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        return None
    if text.startswith("ref:"):
        target = text[4:].strip()
        return SymRef(target) if is_valid_ref_name(target) else None
    return text if is_object_id(text, object_format) else None


@dataclass
class Parsed:
    """What a parser accepted, and how many lines it refused."""

    refs: dict[str, str]
    rejected: int = 0


def parse_packed_refs(data: bytes, object_format: str) -> Parsed:
    """packed-refs: `<id> <refname>` lines; `#` header and `^<id>` peel lines
    are skipped. A malformed line is counted, never guessed at."""
    out = Parsed({})
    for raw in data.splitlines():
        if not raw or raw.startswith((b"#", b"^")):
            continue
        try:
            oid, name = raw.decode("utf-8").split(" ", 1)
        except (UnicodeDecodeError, ValueError):
            out.rejected += 1
            continue
        if is_object_id(oid, object_format) and is_valid_ref_name(name):
            out.refs[name] = oid
        else:
            out.rejected += 1
    return out


def parse_reflog(data: bytes, object_format: str) -> tuple[set[str], int]:
    """A reflog's old and new ids (the zero id dropped), and how many lines
    were malformed."""
    n = HEX_LENGTH[object_format]
    ids: set[str] = set()
    rejected = 0
    for raw in data.splitlines():
        head = raw[: 2 * n + 1].decode("ascii", "replace")
        old, _, new = head.partition(" ")
        if not (is_object_id(old, object_format) and is_object_id(new, object_format)):
            rejected += 1
            continue
        ids |= {i for i in (old, new) if not is_null_id(i)}
    return ids, rejected


def parse_id_list(data: bytes, object_format: str) -> tuple[set[str], int]:
    """One object id per line (the `shallow` file)."""
    ids: set[str] = set()
    rejected = 0
    for raw in data.splitlines():
        text = raw.decode("ascii", "replace").strip()
        if is_object_id(text, object_format):
            ids.add(text)
        elif text:
            rejected += 1
    return ids, rejected


class BadObject(Exception):
    """A loose object whose content does not match its name."""


# A loose object header is `<type> <size>\0`; types git writes.
_HEADER = re.compile(rb"(blob|tree|commit|tag) (\d{1,20})\x00")


def verify_loose_object(chunks: Iterable[bytes], oid: str, object_format: str) -> None:
    """Check that the zlib stream in `chunks` is the object named `oid`.

    Streams: memory stays bounded whatever the object's size, and a stream
    that inflates to more than its header's size is refused (no zip bomb).
    """
    inflater = zlib.decompressobj()
    digest = hashlib.new(object_format)
    header = b""
    expected: int | None = None
    seen = 0
    for inflated in _inflate(inflater, chunks):
        piece = inflated
        if expected is None:
            header += inflated
            m = _HEADER.match(header)
            if m is None:
                if b"\x00" in header or len(header) > 64:
                    raise BadObject(f"{oid}: malformed header")
                continue
            expected = int(m.group(2))
            piece = header[m.end() :]
            digest.update(header[: m.end()])
        seen += len(piece)
        if seen > expected:
            raise BadObject(f"{oid}: longer than its header says")
        digest.update(piece)
    if expected is None or seen != expected or not inflater.eof:
        raise BadObject(f"{oid}: truncated")
    if inflater.unused_data:
        raise BadObject(f"{oid}: data after the object")
    if digest.hexdigest() != oid:
        raise BadObject(f"{oid}: content does not match its name")


def _inflate(inflater: zlib._Decompress, chunks: Iterable[bytes]) -> Iterator[bytes]:
    # max_length bounds each step's output, however well the input compresses.
    step = 1 << 20
    try:
        for chunk in chunks:
            data = inflater.decompress(chunk, step)
            yield data
            while inflater.unconsumed_tail:
                yield inflater.decompress(inflater.unconsumed_tail, step)
    except zlib.error as exc:
        raise BadObject(f"not a zlib stream: {exc}") from None
