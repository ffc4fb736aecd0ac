"""gitdata: a guest's .git files parsed as data; only well-formed ids and
ref names pass, a loose object must hash to its name."""

from __future__ import annotations

import hashlib
import zlib

import pytest
from agent_vm import gitdata
from agent_vm.gitdata import BadObject, SymRef

A = "a" * 40
B = "b" * 40
Z = "0" * 40


@pytest.mark.parametrize(
    "name",
    [
        "refs/heads/main",
        "refs/heads/feature/x",
        "refs/heads/fé/ünï-çødé",
        "refs/heads/$(touch${IFS}PWNED)",
        "refs/heads/quote'and\"double",
        "refs/tags/v1.0",
        "refs/heads/a.b",
        "refs/remotes/origin/HEAD",
    ],
)
def test_ref_names_git_accepts(name: str) -> None:
    assert gitdata.is_valid_ref_name(name)


@pytest.mark.parametrize(
    "name",
    [
        "HEAD",
        "heads/main",
        "refs/heads/a..b",
        "refs/heads/x y",
        "refs/heads/x\ty",
        "refs/heads/esc\x1b[2J",
        "refs/heads/del\x7f",
        "refs/heads/a~1",
        "refs/heads/a^",
        "refs/heads/a:b",
        "refs/heads/a?",
        "refs/heads/a*",
        "refs/heads/a[",
        "refs/heads/a\\b",
        "refs/heads/x.lock",
        "refs/heads/a@{1}",
        "refs/heads/",
        "refs/heads//x",
        "refs/heads/.hidden",
        "refs/heads/end.",
        "refs/heads/../../etc",
        "refs/heads/" + "x" * 1100,
        "refs/heads/\udcff",  # a file name that was not UTF-8
    ],
)
def test_ref_names_git_refuses(name: str) -> None:
    assert not gitdata.is_valid_ref_name(name)


def test_ref_files() -> None:
    assert gitdata.parse_ref_file(f"{A}\n".encode(), "sha1") == A
    assert gitdata.parse_ref_file(b"ref: refs/heads/main\n", "sha1") == SymRef("refs/heads/main")
    for bad in (
        A.upper().encode(),
        b"a" * 39,
        b"a" * 64,
        b"ref: ../../etc/passwd",
        b"ref: refs/heads/a..b",
        b"\xff\xfe",
        b"",
        b"gitdir: /elsewhere",
    ):
        assert gitdata.parse_ref_file(bad, "sha1") is None, bad
    assert gitdata.parse_ref_file(b"c" * 64, "sha256") == "c" * 64


def test_packed_refs_keep_only_well_formed_lines() -> None:
    data = (
        "# pack-refs with: peeled fully-peeled sorted \n"
        f"{A} refs/heads/main\n"
        f"{B} refs/tags/v1\n"
        f"^{A}\n"
        f"{A} refs/heads/bad..name\n"
        "nothex refs/heads/x\n"
        f"{A}refs/heads/nospace\n"
        f"{A} refs/heads/esc\x1b\n"
    ).encode() + b"\xff\xff refs/heads/binary\n"
    parsed = gitdata.parse_packed_refs(data, "sha1")
    assert parsed.refs == {"refs/heads/main": A, "refs/tags/v1": B}
    assert parsed.rejected == 5


def test_reflog_ids_without_the_zero_id() -> None:
    data = (
        f"{Z} {A} t <t@x> 1 +0000\tclone\n"
        f"{A} {B} t <t@x> 2 +0000\tcommit (amend): x\n"
        "garbage line\n"
    ).encode()
    ids, bad = gitdata.parse_reflog(data, "sha1")
    assert ids == {A, B} and bad == 1


def test_id_list() -> None:
    assert gitdata.parse_id_list(f"{A}\n\n{B}\nnope\n".encode(), "sha1") == ({A, B}, 1)


def loose(kind: bytes, body: bytes) -> tuple[str, bytes]:
    raw = kind + b" " + str(len(body)).encode() + b"\0" + body
    return hashlib.sha1(raw, usedforsecurity=False).hexdigest(), zlib.compress(raw)


def chunks(data: bytes, size: int = 7) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def test_a_loose_object_that_hashes_to_its_name() -> None:
    oid, data = loose(b"blob", b"hello\n")
    assert oid == "ce013625030ba8dba906f756967f9e9ca394464a"  # git hash-object
    gitdata.verify_loose_object(chunks(data), oid, "sha1")


def test_a_loose_object_under_another_name_is_refused() -> None:
    _, data = loose(b"blob", b"hello\n")
    with pytest.raises(BadObject, match="does not match its name"):
        gitdata.verify_loose_object([data], A, "sha1")


def test_a_zip_bomb_stops_at_its_declared_size() -> None:
    """A header that says 5 bytes and a stream that inflates to 50 MiB."""
    raw = b"blob 5\0" + b"\0" * (50 << 20)
    with pytest.raises(BadObject, match="longer than its header"):
        gitdata.verify_loose_object([zlib.compress(raw)], A, "sha1")


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (zlib.compress(b"blob 10\0short"), "truncated"),
        (zlib.compress(b"blob 5\0hello")[:-3], "truncated"),
        (zlib.compress(b"evil 5\0hello"), "malformed header"),
        (b"not zlib at all", "not a zlib stream"),
        (zlib.compress(b"blob 5\0hello") + b"junk", "data after the object"),
    ],
)
def test_malformed_loose_objects(data: bytes, why: str) -> None:
    with pytest.raises(BadObject, match=why):
        gitdata.verify_loose_object(chunks(data), A, "sha1")
