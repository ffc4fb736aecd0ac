"""names: a branch name becomes a VM name that is safe as a directory, a
QEMU -name, a host name and an ssh alias; short, unique and stable."""

from __future__ import annotations

import hashlib
import itertools
import re

import pytest
from agent_vm import names
from agent_vm.names import is_vm_name, slug, vm_name

HOSTILE = [
    "feature/x",
    "feature-x",
    "Feature_X",
    "feature//x",
    "../../etc/passwd",
    "..",
    ".",
    "-rf",
    "--help",
    "with space",
    " leading and trailing ",
    "tab\there",
    "new\nline",
    "fé/ünï",
    "日本語",
    "emoji-🚀",
    "quote'\"",
    "$(touch x)",
    "`id`",
    "a;rm -rf /",
    "a,b=c",  # QEMU option syntax
    "a%h%%",  # ssh % tokens
    "${HOME}",
    "a" * 300,
    "a" * 299 + "b",
    "",
    "-",
    "\x00nul",
]

LIMIT = names.SLUG_MAX + 1 + names.HASH_LEN
SAFE = re.compile(r"[a-z0-9][a-z0-9-]*[a-z0-9]")


@pytest.mark.parametrize("branch", HOSTILE)
def test_name_is_safe_and_short(branch: str) -> None:
    n = vm_name("/repo", branch)
    assert SAFE.fullmatch(n), n
    assert len(n) <= LIMIT == 49
    assert is_vm_name(n)
    assert "--" not in n and not n.startswith("-")
    # The hash is always the last part.
    assert re.fullmatch(r".*-[0-9a-f]{8}", n)


def test_names_are_unique_for_distinct_branches() -> None:
    made = [vm_name("/repo", b) for b in HOSTILE]
    assert len(set(made)) == len(HOSTILE)


def test_same_branch_in_two_repositories_differs() -> None:
    assert vm_name("/a/repo", "main") != vm_name("/b/repo", "main")
    # No ambiguity from concatenation.
    assert vm_name("/r", "ab") != vm_name("/ra", "b")


def test_names_are_deterministic() -> None:
    for b in HOSTILE:
        assert vm_name("/repo", b) == vm_name("/repo", b)
    # Pinned, so a change of the scheme (which would orphan existing VMs) is seen.
    digest = hashlib.sha256(b"/repo\0feature/x").hexdigest()
    assert vm_name("/repo", "feature/x") == f"feature-x-{digest[:8]}"


def test_slug() -> None:
    assert slug("Feature/X") == "feature-x"
    assert slug("fé/ünï") == "fe-uni"
    assert slug("../..") == "vm"
    assert slug("") == "vm"
    assert slug("a" * 300) == "a" * names.SLUG_MAX
    # Cutting at the limit never leaves a trailing dash.
    assert slug("a" * (names.SLUG_MAX - 1) + "/b") == "a" * (names.SLUG_MAX - 1)


def test_is_vm_name_rejects_what_is_not_a_name() -> None:
    for bad in ["", "-x", "A", "a/b", "..", "a b", "a_b", "a" * 64, "é"]:
        assert not is_vm_name(bad), bad
    for good in ["a", "main-0123abcd", "a" * 63]:
        assert is_vm_name(good)


def test_many_similar_branches_do_not_collide() -> None:
    branches = ["".join(p) for p in itertools.product("aA/-_.", repeat=4)]
    made = {vm_name("/repo", b) for b in branches}
    assert len(made) == len(branches)
