"""A suspended VM's snapshot on disk: the saved state, what it belongs to,
and the checks that refuse to resume it onto anything else.

`<vm>/snapshot.vmstate` is QEMU's device state, `<vm>/memory.ram` the
guest's RAM (a file while the VM runs, see migration.py);
`<vm>/snapshot.json` (`models.Snapshot`) records the runner that saved
them, the accelerator, and a stamp of the RAM file and every writable disk
as they were when QEMU had flushed and closed them. The JSON file is
written last: without it there is no snapshot, whatever else lies in the
directory.

A guest resumed onto a disk that changed after its memory was saved sees
file systems whose cached metadata no longer matches the blocks on disk
and corrupts them. So a resume compares each disk with its stamp and
refuses on any difference; a snapshot is used at most once (it is deleted
as the guest is continued, since from then on the disk moves on).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from datetime import UTC, datetime
from pathlib import Path

from . import store
from .errors import SnapshotStale
from .models import DiskStamp, Snapshot
from .paths import VmPaths

HEADER_BYTES = 1 << 20


def stamp(disk: Path) -> DiskStamp:
    """What a disk file is now (see models.DiskStamp for why these fields)."""
    with open(disk, "rb") as f:
        st = os.fstat(f.fileno())
        header = hashlib.sha256(f.read(HEADER_BYTES)).hexdigest()
    return DiskStamp(
        file=disk.name,
        size=st.st_size,
        inode=st.st_ino,
        mtime_ns=st.st_mtime_ns,
        ctime_ns=st.st_ctime_ns,
        header_sha256=header,
    )


def exists(vm: VmPaths) -> bool:
    return vm.snapshot_meta.exists()


def load(vm: VmPaths) -> Snapshot:
    return store.load(vm.snapshot_meta, Snapshot)


def _stamped(vm: VmPaths) -> tuple[Path, ...]:
    """What must be unchanged for a resume: the disks and the RAM file."""
    return (*vm.disks, *((vm.memory_file,) if vm.memory_file.exists() else ()))


def _fsync(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def record(
    vm: VmPaths,
    runner: str,
    accel: str,
    memory_mib: int,
    seconds: float,
    *,
    workspace: dict[str, str] | None = None,
) -> Snapshot:
    """Write snapshot.json for the state QEMU just wrote and closed; the RAM
    file's pages reach the disk first (`seconds` is the save so far;
    `workspace`: a disk workspace's refs, see models.Snapshot)."""
    t0 = time.monotonic()
    for p in (vm.snapshot_state, vm.memory_file):
        os.chmod(p, 0o600)
        _fsync(p)
    snap = Snapshot(
        taken_at=datetime.now(UTC),
        size_bytes=sum(p.stat().st_blocks * 512 for p in (vm.snapshot_state, vm.memory_file)),
        suspend_seconds=round(seconds + time.monotonic() - t0, 3),
        runner=runner,
        accel=accel,
        memory_mib=memory_mib,
        disks=[stamp(d) for d in _stamped(vm)],
        workspace=workspace,
    )
    store.save(vm.snapshot_meta, snap)
    return snap


def changed_disks(vm: VmPaths, snap: Snapshot) -> list[str]:
    """The disks that differ from their stamps (missing, added or touched)."""
    now = {d.name: d for d in _stamped(vm)}
    changed = [s.file for s in snap.disks if s.file not in now or stamp(now[s.file]) != s]
    changed += [name for name in now if name not in {s.file for s in snap.disks}]
    return sorted(changed)


def check(vm: VmPaths, snap: Snapshot) -> None:
    """Refuse a snapshot whose disks, state file or runner are not what saved it."""
    changed = changed_disks(vm, snap)
    if changed:
        raise SnapshotStale(
            f"VM {vm.name}'s snapshot does not belong to its disk any more "
            f"({', '.join(changed)} changed after the VM was suspended); "
            "resuming it would corrupt the guest's file systems",
            hint="'agent-vm stop' discards the snapshot; the next start boots afresh",
        )
    if not vm.snapshot_state.is_file():
        raise SnapshotStale(
            f"VM {vm.name}'s snapshot state file {vm.snapshot_state.name} is missing",
            hint="'agent-vm stop' discards the snapshot; the next start boots afresh",
        )
    try:
        current = str(vm.runner_link.resolve(strict=True))
    except OSError:
        current = None
    if current != snap.runner:
        raise SnapshotStale(
            f"VM {vm.name}'s snapshot was saved by runner {snap.runner}, "
            f"and the VM's runner is now {current or 'gone'}",
            hint="'agent-vm stop' discards the snapshot; the next start boots afresh",
        )


def discard(vm: VmPaths, keep_memory: bool = False) -> bool:
    """Delete the snapshot; True if there was one. The JSON goes first, so
    an interrupted discard leaves no snapshot behind, only a stray file.
    `keep_memory`: a resumed QEMU is running on the RAM file (unlinking it
    would leave the next suspend without the guest's memory)."""
    had = exists(vm)
    files = [vm.snapshot_meta, vm.snapshot_state, partial(vm)]
    for p in files if keep_memory else [*files, vm.memory_file]:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
    return had


def partial(vm: VmPaths) -> Path:
    """Where QEMU writes the state before it is complete."""
    return vm.snapshot_state.with_name(vm.snapshot_state.name + ".partial")


def age_seconds(snap: Snapshot) -> float:
    return (datetime.now(UTC) - snap.taken_at).total_seconds()
