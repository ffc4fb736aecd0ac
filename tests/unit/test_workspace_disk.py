"""--workspace-mode disk without a VM: the disk made at create (real git,
mkfs.ext4, debugfs and qemu-img; read back here with debugfs, which the
CLI itself never does), and diff, pull and destroy's check reading the
guest's bundle through the quarantine, with the guest's side run by a
stand-in `ssh` that runs the command locally."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from agent_vm import (
    diff,
    guestbundle,
    lifecycle,
    pull,
    quarantine,
    store,
    tools,
    unsaved,
    workspace_disk,
)
from agent_vm.context import Context
from agent_vm.errors import GitError, InvalidInput, NotRunning, UnsavedWork
from agent_vm.lifecycle import CreateOptions
from agent_vm.models import Runtime, Snapshot, VmConfig, VmState, WorkspaceMode
from agent_vm.paths import VmPaths
from plumbum import local
from unit_fakes import commit, git


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
def guest(
    ctx: Context, fake_ssh: None, monkeypatch: pytest.MonkeyPatch
) -> tuple[Context, VmPaths, VmConfig, Path]:
    """A VM whose workspace directory stands in for the guest's disk: the
    quarantine reads it only through the guest's bundle (the stand-in ssh
    runs the guest script there), as for a running disk-mode VM."""
    cfg = lifecycle.create(ctx, CreateOptions())
    vm = ctx.layout.vm(cfg.name)
    ws = Path(cfg.workspace)
    monkeypatch.setattr(guestbundle, "GUEST_WORKSPACE", str(ws))
    monkeypatch.setattr(
        quarantine, "source_for", lambda vm, cfg: quarantine._from_the_guest(vm, cfg, 2222)
    )
    return ctx, vm, cfg, ws


def test_nothing_new_in_the_guest(guest: tuple[Context, VmPaths, VmConfig, Path]) -> None:
    ctx, vm, cfg, _ = guest
    assert unsaved.unsaved_work(ctx.layout, vm, cfg) == []
    rep, patch = diff.report(ctx.layout, vm, cfg)
    assert (rep.head, rep.commits, rep.files, patch) == (cfg.commit, [], [], b"")


def test_commits_and_uncommitted_changes_come_out_through_the_quarantine(
    guest: tuple[Context, VmPaths, VmConfig, Path],
) -> None:
    ctx, vm, cfg, ws = guest
    agent_commit = commit(ws, "new", "agent\n")
    (ws / "README").write_text("edited, not committed\n")
    index_before = (ws / ".git" / "index").read_bytes()

    rep, patch = diff.report(ctx.layout, vm, cfg)
    assert [c.commit for c in rep.commits] == [agent_commit]
    assert rep.head_ref == "refs/heads/main"
    assert [(f.status, f.path) for f in rep.uncommitted] == [("M", "README")]
    assert b"+edited, not committed" in patch and b"+agent" in patch
    reasons = unsaved.unsaved_work(ctx.layout, vm, cfg)
    assert reasons == [
        "1 commit(s) on branch(es) main that exist nowhere else",
        "uncommitted changes to 1 file(s)",
    ]
    # The guest's repository is as it was: index untouched, no ref left.
    assert (ws / ".git" / "index").read_bytes() == index_before
    assert "agent-vm" not in git(ws, "for-each-ref")

    pulled = pull.pull(ctx.layout, vm, cfg, include_uncommitted=True)
    assert git(ctx.cwd, "rev-parse", "agent/main~1") == agent_commit
    assert pulled.snapshot == git(ctx.cwd, "rev-parse", "agent/main")
    assert git(ctx.cwd, "show", "agent/main:README") == "edited, not committed"
    assert unsaved.unsaved_work(ctx.layout, vm, cfg) == []


def test_a_suspend_records_what_the_guest_held(
    guest: tuple[Context, VmPaths, VmConfig, Path],
) -> None:
    """What `suspend` keeps in snapshot.json reads as the live guest did."""
    ctx, vm, cfg, ws = guest
    agent_commit = commit(ws, "new")
    (ws / "untracked").write_text("x\n")
    lock = ctx.layout.quarantine_lock(vm.name)
    refs = quarantine.record(vm, lock, cfg, 2222)
    assert refs["HEAD"] == refs["refs/heads/main"] == agent_commit
    assert guestbundle.WORKTREE_REF in refs
    live = unsaved.unsaved_work(ctx.layout, vm, cfg)
    recorded = quarantine.RecordedSource(refs, Path(cfg.repo), cfg.commit)
    with quarantine.opened(vm, lock, cfg, recorded) as (q, snap):
        assert snap.head == agent_commit and snap.head_ref == "refs/heads/main"
        assert q.changed_files(q.tree_of(snap.head), q.files_tree(snap, snap.head)) == ["untracked"]
    assert live == [
        "1 commit(s) on branch(es) main that exist nowhere else",
        "uncommitted changes to 1 file(s)",
    ]


def test_a_commit_only_the_reflog_reaches_is_not_lost(
    guest: tuple[Context, VmPaths, VmConfig, Path],
) -> None:
    ctx, vm, cfg, ws = guest
    commit(ws, "gone")
    git(ws, "reset", "-q", "--hard", "HEAD~1")
    assert unsaved.unsaved_work(ctx.layout, vm, cfg) == [
        "1 commit(s) reachable only from the reflog"
    ]


def test_a_hostile_answer_is_refused(
    guest: tuple[Context, VmPaths, VmConfig, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx, vm, cfg, _ = guest
    # A "guest" whose workspace is not a repository.
    (tmp_path / "fake").mkdir()
    monkeypatch.setattr(guestbundle, "GUEST_WORKSPACE", str(tmp_path / "fake"))
    with pytest.raises(GitError, match="could not bundle its workspace"):
        diff.report(ctx.layout, vm, cfg)
    # Bundle bytes that are not a bundle.
    monkeypatch.setattr(guestbundle, "GUEST_SCRIPT", "printf '# v2 git bundle\\nnot a bundle\\n'")
    with pytest.raises(GitError, match="the guest's bundle is refused"):
        diff.report(ctx.layout, vm, cfg)
    assert "cannot be verified" in unsaved.unsaved_work(ctx.layout, vm, cfg)[0]
    assert not (vm.quarantine / "guest.bundle").exists()


def test_a_stopped_disk_vm_cannot_be_read_a_suspended_one_as_recorded(ctx: Context) -> None:
    cfg = lifecycle.create(ctx, CreateOptions(settings={"workspace_mode": "disk"}))
    vm = ctx.layout.vm(cfg.name)
    with pytest.raises(NotRunning, match="reads only through the running guest"):
        quarantine.source_for(vm, cfg)
    with pytest.raises(UnsavedWork, match="reads only through the running guest"):
        lifecycle.destroy(ctx, vm)
    assert vm.dir.exists()
    # Suspended: what the guest's bundle said at the suspend.
    refs = {"HEAD": cfg.commit, "refs/heads/main": cfg.commit}
    store.save(vm.snapshot_meta, snapshot_record(refs))
    store.save(vm.runtime, Runtime(state=VmState.SUSPENDED))
    source = quarantine.source_for(vm, cfg)
    assert isinstance(source, quarantine.RecordedSource) and source.refs == refs
    assert unsaved.unsaved_work(ctx.layout, vm, cfg) == []
    lifecycle.destroy(ctx, vm)
    assert not vm.dir.exists()


def snapshot_record(workspace: dict[str, str]) -> Snapshot:
    return Snapshot(
        taken_at=datetime.now(UTC),
        size_bytes=1,
        suspend_seconds=0.1,
        runner="/nix/store/x-run",
        accel="tcg",
        memory_mib=1024,
        disks=[],
        workspace=workspace,
    )


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
