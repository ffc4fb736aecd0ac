"""Suspend/resume without a VM: the snapshot's stamps and checks, what
stop/reset/update/start/resume do with a suspended VM, QEMU's migration
driven through a stand-in QMP, and the guest agent's clock protocol against
well-behaved and hostile stand-ins. Real QEMU is tests/e2e/test_suspend.py."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from agent_vm import guestclock, lifecycle, migration, snapshot, state, status, store
from agent_vm.context import Context
from agent_vm.errors import (
    BuildFailed,
    GuestFailed,
    InvalidInput,
    NotRunning,
    SnapshotStale,
    SuspendRefused,
)
from agent_vm.lifecycle import Changes, CreateOptions
from agent_vm.models import Runtime, VmState
from agent_vm.paths import VmPaths
from agent_vm.qmp import QmpError
from plumbum import local
from unit_fakes import make_repo


def suspended_vm(ctx: Context, tmp_path: Path) -> VmPaths:
    """A VM as `suspend` leaves it: disk, RAM file, state file, stamps."""
    cfg = lifecycle.create(ctx, CreateOptions())
    vm = ctx.layout.vm(cfg.name)
    runner = tmp_path / "store-runner"
    (runner / "bin").mkdir(parents=True, exist_ok=True)
    vm.runner_link.symlink_to(runner)
    vm.disk.write_bytes(b"QFI\xfb" + b"\0" * 4096)
    vm.memory_file.write_bytes(b"\0" * 8192)
    vm.snapshot_state.write_bytes(b"QEVM" + b"\1" * 100)
    snapshot.record(vm, str(runner), "tcg", cfg.memory_mib, 0.5)
    rt = state.suspending(Runtime(state=VmState.RUNNING), vm.name)
    store.save(vm.runtime, state.suspended(rt, vm.name))
    return vm


# --- the snapshot on disk --------------------------------------------------------------------


def test_record_stamps_every_disk_and_the_ram_and_makes_the_files_private(
    ctx: Context, tmp_path: Path
) -> None:
    vm = suspended_vm(ctx, tmp_path)
    snap = snapshot.load(vm)
    assert sorted(d.file for d in snap.disks) == ["disk.qcow2", "memory.ram"]
    assert snap.accel == "tcg" and snap.suspend_seconds >= 0.5
    assert snap.size_bytes > 0
    for f in (vm.snapshot_state, vm.memory_file, vm.snapshot_meta):
        assert f.stat().st_mode & 0o777 == 0o600, f
    snapshot.check(vm, snap)  # unchanged: accepted


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (lambda vm: os.utime(vm.disk), "disk.qcow2"),  # metadata touched
        (lambda vm: vm.disk.write_bytes(vm.disk.read_bytes()), "disk.qcow2"),  # rewritten
        (lambda vm: vm.memory_file.unlink(), "memory.ram"),
        (lambda vm: vm.workspace_disk.write_bytes(b"x"), "workspace.qcow2"),  # a disk added
    ],
)
def test_a_changed_disk_is_refused(
    ctx: Context, tmp_path: Path, change: Callable[[VmPaths], object], named: str
) -> None:
    vm = suspended_vm(ctx, tmp_path)
    time.sleep(0.01)  # a new mtime/ctime even on a coarse clock
    change(vm)
    with pytest.raises(SnapshotStale, match=rf"{named} changed after the VM was suspended"):
        snapshot.check(vm, snapshot.load(vm))


def test_a_copied_disk_with_the_same_times_is_another_inode(ctx: Context, tmp_path: Path) -> None:
    vm = suspended_vm(ctx, tmp_path)
    st = vm.disk.stat()
    copy = vm.dir / "copy"
    copy.write_bytes(vm.disk.read_bytes())
    os.utime(copy, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(copy, vm.disk)
    with pytest.raises(SnapshotStale, match=r"disk\.qcow2 changed"):
        snapshot.check(vm, snapshot.load(vm))


def test_another_runner_or_a_missing_state_file_is_refused(ctx: Context, tmp_path: Path) -> None:
    vm = suspended_vm(ctx, tmp_path)
    other = tmp_path / "other-runner"
    other.mkdir()
    vm.runner_link.unlink()
    vm.runner_link.symlink_to(other)
    with pytest.raises(SnapshotStale, match=r"saved by runner .*store-runner.*now .*other-runner"):
        snapshot.check(vm, snapshot.load(vm))
    vm2 = suspended_vm(ctx.__class__(ctx.layout, cwd=make_repo(tmp_path / "r2")), tmp_path)
    vm2.snapshot_state.unlink()
    with pytest.raises(SnapshotStale, match=r"snapshot\.vmstate is missing"):
        snapshot.check(vm2, snapshot.load(vm2))


# --- the verbs with a suspended VM -----------------------------------------------------------


def test_status_shows_the_snapshot(ctx: Context, tmp_path: Path) -> None:
    vm = suspended_vm(ctx, tmp_path)
    st = status.status(ctx, vm, probe=False)
    assert st.state == VmState.SUSPENDED and st.pid is None
    assert st.snapshot_bytes == snapshot.load(vm).size_bytes
    assert st.snapshot_age_seconds is not None and 0 <= st.snapshot_age_seconds < 60
    text = status.render_status(st)
    assert "state:     suspended" in text and "snapshot:  0 MiB, taken 0s ago" in text


def test_stop_discards_the_snapshot(ctx: Context, tmp_path: Path) -> None:
    vm = suspended_vm(ctx, tmp_path)
    rt = lifecycle.stop(ctx, vm)
    assert rt.state == VmState.STOPPED
    assert not snapshot.exists(vm)
    assert not vm.snapshot_state.exists() and not vm.memory_file.exists()
    assert vm.disk.exists()  # the guest's disk is kept, as with any stop


def test_reset_discards_the_snapshot_with_the_disk(ctx: Context, tmp_path: Path) -> None:
    vm = suspended_vm(ctx, tmp_path)
    assert lifecycle.reset(ctx, vm) is True
    assert store.load_runtime(vm).state == VmState.STOPPED
    assert not snapshot.exists(vm) and not vm.disk.exists()


@pytest.mark.parametrize(
    "change",
    [
        Changes(settings={"memory_mib": 4096}),
        Changes(settings={"cores": 4}),
        Changes(settings={"network": "none"}),
        Changes(ssh_port=2999),
    ],
)
def test_update_refuses_while_suspended(ctx: Context, tmp_path: Path, change: Changes) -> None:
    vm = suspended_vm(ctx, tmp_path)
    before = vm.config.read_text()
    with pytest.raises(InvalidInput, match="is suspended: its saved state belongs"):
        lifecycle.update(ctx, vm, change)
    assert vm.config.read_text() == before
    assert snapshot.exists(vm)
    # The same values again are no change (what `up` of a declared VM does).
    _, restart = lifecycle.update(ctx, vm, Changes(settings={"memory_mib": 2048}))
    assert restart is False


def test_the_workspace_mode_is_chosen_at_create(ctx: Context) -> None:
    cfg = lifecycle.create(ctx, CreateOptions())
    with pytest.raises(InvalidInput, match="chosen when a VM is made"):
        lifecycle.update(ctx, ctx.layout.vm(cfg.name), Changes(settings={"workspace_mode": "disk"}))


def test_start_refuses_a_stale_snapshot_and_keeps_the_vm_suspended(
    ctx: Context, tmp_path: Path
) -> None:
    vm = suspended_vm(ctx, tmp_path)
    time.sleep(0.01)
    os.utime(vm.disk)
    for verb in (lifecycle.start, lifecycle.resume):
        with pytest.raises(SnapshotStale):
            verb(ctx, vm)
        assert store.load_runtime(vm).state == VmState.SUSPENDED
        assert snapshot.exists(vm)


def test_suspend_and_resume_need_the_right_state(ctx: Context, tmp_path: Path) -> None:
    vm = suspended_vm(ctx, tmp_path)
    with pytest.raises(NotRunning, match="already suspended"):
        lifecycle.suspend(ctx, vm)
    lifecycle.stop(ctx, vm)
    with pytest.raises(NotRunning, match="is stopped, not running"):
        lifecycle.suspend(ctx, vm)
    with pytest.raises(NotRunning, match="is stopped, not suspended"):
        lifecycle.resume(ctx, vm)


def test_a_snapshot_left_beside_a_stopped_vm_is_discarded_at_start(
    ctx: Context, tmp_path: Path
) -> None:
    """Never restored into a VM whose record says it is not suspended: the
    start discards it (and then boots, whose build fails here: no flake)."""
    vm = suspended_vm(ctx, tmp_path)
    store.save(vm.runtime, Runtime(state=VmState.STOPPED))
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "nix").write_text("#!/bin/sh\nexit 1\n")
    (bindir / "nix").chmod(0o755)
    with local.env(PATH=f"{bindir}:{os.environ['PATH']}"), pytest.raises(BuildFailed):
        lifecycle.start(ctx, vm)
    assert not snapshot.exists(vm) and not vm.snapshot_state.exists()


# --- migration over QMP ----------------------------------------------------------------------


class FakeQmp:
    """Answers like QEMU; `outcome` is what query-migrate ends in."""

    def __init__(self, outcome: str = "completed", blocked: list[str] | None = None) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.outcome = outcome
        self.blocked = blocked or []
        self.polls = 0

    def execute(self, command: str, **args: Any) -> Any:
        self.calls.append((command, args))
        if command == "query-migrate":
            if not any(c in {"migrate", "migrate-incoming"} for c, _ in self.calls):
                return {"blocked-reasons": self.blocked} if self.blocked else {}
            self.polls += 1
            if self.polls < 3:
                return {"status": "active"}
            info = {"status": self.outcome}
            if self.outcome == "failed":
                info["error-desc"] = "No space left on device"
            return info
        if command == "query-kvm":
            return {"enabled": False, "present": True}
        return {}


def names(q: FakeQmp) -> list[str]:
    return [c for c, _ in q.calls if c != "query-migrate"]


def test_save_stops_the_guest_then_writes_only_device_state() -> None:
    q = FakeQmp()
    migration.save(q, Path("snapshot.vmstate.partial"), timeout=5)  # type: ignore[arg-type]
    assert names(q) == ["stop", "migrate-set-capabilities", "migrate"]
    caps = dict(q.calls[1][1])["capabilities"]
    assert caps == [{"capability": "x-ignore-shared", "state": True}]
    assert q.calls[2][1] == {"uri": "file:snapshot.vmstate.partial"}  # relative: no commas


def test_a_failed_save_continues_the_guest() -> None:
    q = FakeQmp("failed")
    with pytest.raises(SuspendRefused, match="No space left on device; it runs on"):
        migration.save(q, Path("s"), timeout=5)  # type: ignore[arg-type]
    assert names(q)[-1] == "cont"


def test_load_uses_the_same_capability_and_leaves_the_guest_paused() -> None:
    q = FakeQmp()
    migration.load(q, Path("snapshot.vmstate"), timeout=5)  # type: ignore[arg-type]
    assert names(q) == ["migrate-set-capabilities", "migrate-incoming"]
    assert "cont" not in names(q)
    with pytest.raises(GuestFailed, match="could not load the snapshot"):
        migration.load(FakeQmp("failed"), Path("s"), timeout=5)  # type: ignore[arg-type]


def test_blockers_and_their_messages() -> None:
    q = FakeQmp(
        blocked=[
            "Migration is disabled when VirtFS export path '/w' is mounted in the guest "
            "using mount_tag 'workspace'"
        ]
    )
    reasons = migration.blockers(q)  # type: ignore[arg-type]
    err = migration.refusal(reasons)
    assert "9p workspace share is mounted" in err.message
    assert err.hint is not None and "--workspace-mode disk" in err.hint
    vfs = migration.refusal(["vhost-user-fs: migration is not supported"])
    assert "virtiofs" in vfs.message and "--workspace-mode disk" in str(vfs.hint)
    other = migration.refusal(["a device that cannot be migrated"])
    assert other.message == "QEMU cannot suspend this VM: a device that cannot be migrated"
    assert migration.accelerator(FakeQmp()) == "tcg"  # type: ignore[arg-type]


def test_qmp_errors_during_a_save_are_a_refusal_too() -> None:
    class Broken(FakeQmp):
        def execute(self, command: str, **args: Any) -> Any:
            if command == "migrate":
                raise QmpError("There's a migration process in progress")
            return super().execute(command, **args)

    q = Broken()
    with pytest.raises(SuspendRefused, match="migration process in progress"):
        migration.save(q, Path("s"), timeout=5)  # type: ignore[arg-type]
    assert names(q)[-1] == "cont"


# --- the guest agent and the clock -----------------------------------------------------------


def agent(path: Path, respond: Callable[[socket.socket, dict[str, Any]], None]) -> Iterator[None]:
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(str(path))
    srv.listen(1)
    seen: list[dict[str, Any]] = []

    def serve() -> None:
        conn, _ = srv.accept()
        with conn:
            buf = b""
            while True:
                try:
                    chunk = conn.recv(4096)
                except OSError:
                    return
                if not chunk:
                    return
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    req = json.loads(line)
                    seen.append(req)
                    respond(conn, req)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        yield
    finally:
        srv.close()


def good(sent: list[dict[str, Any]]) -> Callable[[socket.socket, dict[str, Any]], None]:
    def respond(conn: socket.socket, req: dict[str, Any]) -> None:
        sent.append(req)
        if req["execute"] == "guest-sync-delimited":
            # Stale output of an earlier client first, then the delimiter.
            conn.sendall(b'{"return": 7}\n\xff{"return": %d}\n' % req["arguments"]["id"])
        elif req["execute"] == "guest-set-time":
            conn.sendall(b'{"return": {}}\n')

    return respond


def test_the_clock_is_set_to_the_host_time(tmp_path: Path) -> None:
    sent: list[dict[str, Any]] = []
    sock = tmp_path / "qga.sock"
    with contextlib_agent(sock, good(sent)):
        before = time.time_ns()
        guestclock.set_to_host_time(sock, timeout=5)
        after = time.time_ns()
    assert [r["execute"] for r in sent] == ["guest-sync-delimited", "guest-set-time"]
    assert before <= sent[1]["arguments"]["time"] <= after


@pytest.mark.parametrize(
    ("reply", "match"),
    [
        (b"", "did not answer in time"),  # silence
        (b"\xff" + b"x" * 200_000, "overlong line"),
        (b"\xffnot json\n", "not JSON"),
        (b"\xff[1, 2]\n", "not an answer"),
    ],
)
def test_a_guest_agent_that_misbehaves_is_bounded(tmp_path: Path, reply: bytes, match: str) -> None:
    def respond(conn: socket.socket, req: dict[str, Any]) -> None:
        if reply:
            conn.sendall(reply)

    sock = tmp_path / "qga.sock"
    with contextlib_agent(sock, respond):
        t0 = time.monotonic()
        with pytest.raises(guestclock.ClockNotSet, match=match):
            guestclock.set_to_host_time(sock, timeout=1.0)
        assert time.monotonic() - t0 < 3


def test_a_refused_set_time_and_no_channel(tmp_path: Path) -> None:
    def respond(conn: socket.socket, req: dict[str, Any]) -> None:
        if req["execute"] == "guest-sync-delimited":
            conn.sendall(b'\xff{"return": %d}\n' % req["arguments"]["id"])
        else:
            conn.sendall(b'{"error": {"class": "GenericError", "desc": "no"}}\n')

    sock = tmp_path / "qga.sock"
    with contextlib_agent(sock, respond), pytest.raises(guestclock.ClockNotSet, match="refused"):
        guestclock.set_to_host_time(sock, timeout=2)
    with pytest.raises(guestclock.ClockNotSet, match="no guest agent channel"):
        guestclock.set_to_host_time(tmp_path / "absent.sock", timeout=1)


contextlib_agent = contextlib.contextmanager(agent)


def test_whether_the_guest_agent_listens() -> None:
    class Chardevs(FakeQmp):
        def __init__(self, open_: bool | None) -> None:
            super().__init__()
            self.open_ = open_

        def execute(self, command: str, **args: Any) -> Any:
            assert command == "query-chardev"
            devs: list[dict[str, Any]] = [{"label": "console", "frontend-open": True}]
            if self.open_ is not None:
                devs.append(
                    {"label": "qga", "filename": "unix:qga.sock", "frontend-open": self.open_}
                )
            return devs

    assert guestclock.agent_listening(Chardevs(True)) is True  # type: ignore[arg-type]
    assert guestclock.agent_listening(Chardevs(False)) is False  # type: ignore[arg-type]
    assert guestclock.agent_listening(Chardevs(None)) is False  # type: ignore[arg-type]
