"""--workspace-mode disk without a VM: the disk made at create (real git,
mkfs.ext4, debugfs and qemu-img; read back here with debugfs, which the
CLI itself never does), and the guest's bundle verified on the host with
the guest's side run by a stand-in `ssh` that runs the command locally."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from agent_vm import guestbundle, lifecycle, store, tools, workspace_disk
from agent_vm.context import Context
from agent_vm.errors import GitError, InvalidInput, UnsavedWork
from agent_vm.lifecycle import CreateOptions
from agent_vm.models import Runtime, VmState, WorkspaceMode
from agent_vm.paths import StateLayout
from plumbum import local
from unit_fakes import git, make_repo


@pytest.fixture
def ctx(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Context:
    repo = make_repo(tmp_path / "repo")
    monkeypatch.setenv("AGENT_VM_ACCEL", "tcg")
    return Context(layout=StateLayout(tmp_path / "state"), timeout=1.0, cwd=repo)


def debugfs(image: Path, request: str) -> str:
    raw = image.with_suffix(".check.raw")
    subprocess.run(
        ["qemu-img", "convert", "-f", "qcow2", "-O", "raw", str(image), str(raw)], check=True
    )
    tool = workspace_disk.debugfs()
    out = subprocess.run(
        [tool, "-R", request, str(raw)], capture_output=True, text=True, check=True
    )
    raw.unlink()
    return out.stdout


def test_create_makes_the_workspace_disk_and_nothing_of_it_on_the_host(ctx: Context) -> None:
    cfg = lifecycle.create(ctx, CreateOptions(settings={"workspace_mode": "disk"}))
    vm = ctx.layout.vm(cfg.name)
    assert cfg.workspace_mode == WorkspaceMode.DISK
    assert cfg.workspace == str(vm.workspace_disk) and cfg.workspace_owned
    assert not vm.workspace.exists()
    # Only the disk: no clone, raw image or temp dir stays behind.
    assert sorted(p.name for p in vm.dir.iterdir()) == [
        "events.log",
        "secrets",
        "ssh",
        "vm.json",
        "workspace.qcow2",
    ]
    assert vm.workspace_disk.stat().st_mode & 0o777 == 0o600
    listing = debugfs(vm.workspace_disk, "ls -l /")
    assert "README" in listing and ".git" in listing
    assert "lost+found" not in listing  # git in the guest would trip over it
    uid = 1000 if os.getuid() == 0 else os.getuid()
    stat = debugfs(vm.workspace_disk, "stat /README")
    assert re.search(rf"User:\s+{uid}\s+Group:\s+{uid}\b", stat), stat
    assert debugfs(vm.workspace_disk, "cat /README") == "hello\n"
    assert store.load_config(vm).model_dump()["workspace_mode"] == "disk"


def test_a_shared_directory_and_a_disk_are_exclusive(ctx: Context, tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="--workspace shares a directory"):
        lifecycle.create(
            ctx, CreateOptions(settings={"workspace_mode": "disk"}, workspace=tmp_path)
        )


# --- the guest's bundle ------------------------------------------------------------------


# `ssh … -- dev@host 'quoted command'`: run the command here, as the guest would.
FAKE_SSH = """#!/bin/sh
for last; do :; done
exec sh -c "$last"
"""


@pytest.fixture
def fake_ssh(tmp_path: Path) -> Iterator[None]:
    bindir = tmp_path / "fake-ssh-bin"
    bindir.mkdir()
    (bindir / "ssh").write_text(FAKE_SSH)
    (bindir / "ssh").chmod(0o755)
    with local.env(PATH=f"{bindir}:{os.environ['PATH']}"):
        yield


@pytest.fixture
def guest_ws(ctx: Context, tmp_path: Path) -> tuple[Context, Path]:
    """A share-mode VM whose workspace dir stands in for the guest's disk."""
    cfg = lifecycle.create(ctx, CreateOptions())
    return ctx, Path(cfg.workspace)


def fetch(ctx: Context, ws: Path) -> guestbundle.GuestWork:
    vm = ctx.layout.vm(store.vm_names(ctx.layout)[0])
    return guestbundle.fetch(vm, store.load_config(vm), 2222, mount_point=str(ws))


def test_nothing_new_in_the_guest(fake_ssh: None, guest_ws: tuple[Context, Path]) -> None:
    ctx, ws = guest_ws
    work = fetch(ctx, ws)
    assert work.refs == {} and guestbundle.unsaved(work, ctx.cwd) == []


def test_commits_and_uncommitted_changes_come_out_as_data(
    fake_ssh: None, guest_ws: tuple[Context, Path]
) -> None:
    ctx, ws = guest_ws
    (ws / "new").write_text("agent\n")
    git(ws, "add", "new")
    git(ws, "commit", "-q", "-m", "agent work")
    agent_commit = git(ws, "rev-parse", "HEAD")
    (ws / "README").write_text("edited, not committed\n")
    index_before = (ws / ".git" / "index").read_bytes()

    work = fetch(ctx, ws)
    assert work.commits == {"refs/heads/main": agent_commit, "HEAD": agent_commit}
    assert work.uncommitted
    reasons = guestbundle.unsaved(work, ctx.cwd)
    assert reasons[0] == "uncommitted changes" and "not in" in reasons[1]
    # The guest's repository is as it was: index untouched, no ref left.
    assert (ws / ".git" / "index").read_bytes() == index_before
    assert "agent-vm" not in git(ws, "for-each-ref")
    # The objects are in the private git dir, verified.
    vm = ctx.layout.vm(store.vm_names(ctx.layout)[0])
    pg = guestbundle.private_git(vm)
    assert pg.has_commit(agent_commit)
    tree = pg.git("ls-tree", "--name-only", f"{guestbundle.GUEST_REFS}refs/agent-vm/worktree")
    assert sorted(tree.stdout.split()) == ["README", "new"]

    # Once the user's repository has the commit and the tree is clean,
    # nothing would be lost.
    git(ws, "checkout", "-q", "README")
    git(ctx.cwd, "fetch", "-q", str(ws), "main:agent")
    assert guestbundle.unsaved(fetch(ctx, ws), ctx.cwd) == []


def test_a_hostile_answer_is_refused(
    fake_ssh: None, guest_ws: tuple[Context, Path], tmp_path: Path
) -> None:
    ctx, _ = guest_ws
    vm = ctx.layout.vm(store.vm_names(ctx.layout)[0])
    cfg = store.load_config(vm)
    # A "guest" whose workspace is not a repository but answers anyway.
    (tmp_path / "fake").mkdir()
    with pytest.raises(GitError, match="could not bundle its workspace"):
        guestbundle.fetch(vm, cfg, 2222, mount_point=str(tmp_path / "fake"))
    # Bundle bytes that are not a bundle.
    evil = tmp_path / "evil"
    evil.mkdir()
    (evil / ".git").mkdir()
    script = guestbundle.GUEST_SCRIPT
    try:
        guestbundle.GUEST_SCRIPT = "printf '# v2 git bundle\\nnot a bundle\\n'"
        with pytest.raises(GitError, match="refused the guest's bundle"):
            guestbundle.fetch(vm, cfg, 2222, mount_point=str(evil))
    finally:
        guestbundle.GUEST_SCRIPT = script
    assert not (guestbundle.private_git(vm).root / "incoming.bundle").exists()


@pytest.mark.parametrize(
    "line",
    [
        "zz" * 20 + " refs/heads/main",  # not an id
        "a" * 40 + " refs/remotes/origin/main",  # not a ref the script makes
        "a" * 40 + " refs/heads/../../x",
        "a" * 40 + " refs/heads/a b",
        "a" * 41 + " HEAD",
    ],
)
def test_bundle_heads_are_parsed_as_data(line: str) -> None:
    with pytest.raises(GitError, match="names a ref agent-vm does not take"):
        guestbundle.parse_heads(line)
    ok = "a" * 40 + " refs/heads/feature/x\n" + "b" * 64 + " refs/agent-vm/worktree\n"
    assert guestbundle.parse_heads(ok) == {
        "refs/heads/feature/x": "a" * 40,
        "refs/agent-vm/worktree": "b" * 64,
    }


def test_destroy_of_a_disk_vm_that_is_not_running_needs_force(ctx: Context) -> None:
    cfg = lifecycle.create(ctx, CreateOptions(settings={"workspace_mode": "disk"}))
    vm = ctx.layout.vm(cfg.name)
    with pytest.raises(UnsavedWork, match="reads only from the running guest"):
        lifecycle.destroy(ctx, vm)
    assert vm.dir.exists()
    store.save(vm.runtime, Runtime(state=VmState.STOPPED))
    lifecycle.destroy(ctx, vm, force=True)
    assert not vm.dir.exists()


# --- bounded output ----------------------------------------------------------------------


def test_run_to_file_bounds_size_and_time(tmp_path: Path) -> None:
    big = [sys.executable, "-c", "import sys; sys.stdout.buffer.write(b'x' * 5000)"]
    code, _, within = tools.run_to_file(big, tmp_path / "a", limit=100_000, timeout=10)
    assert (code, within, (tmp_path / "a").stat().st_size) == (0, True, 5000)
    assert (tmp_path / "a").stat().st_mode & 0o777 == 0o600
    _, _, within = tools.run_to_file(big, tmp_path / "b", limit=1000, timeout=10)
    assert not within and (tmp_path / "b").stat().st_size <= 1000
    slow = [sys.executable, "-c", "import time; time.sleep(30)"]
    _, _, within = tools.run_to_file(slow, tmp_path / "c", limit=10, timeout=0.5)
    assert not within
