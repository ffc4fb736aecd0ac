"""Reading and writing the JSON state files through their models."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from .errors import CorruptState, NotFound
from .fsutil import atomic_write
from .models import Runtime, VmConfig
from .paths import StateLayout, VmPaths

M = TypeVar("M", bound=BaseModel)


def load(path: Path, model: type[M], recover: str = "restore it or delete it") -> M:
    """`path` parsed as `model`; CorruptState (naming the file) when it is not,
    or when it cannot be read at all (no permission, a directory in its
    place): one broken VM must not stop commands about the others."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise NotFound(f"{path} does not exist") from None
    except OSError as exc:
        raise CorruptState(
            f"{path} cannot be read ({exc.strerror or type(exc).__name__})", hint=recover
        ) from None
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "file"
        raise CorruptState(
            f"{path} is corrupt ({where}: {first['msg']})",
            hint=recover,
        ) from None


def save(path: Path, obj: BaseModel) -> None:
    atomic_write(path, obj.model_dump_json(indent=2) + "\n")


def load_config(vm: VmPaths) -> VmConfig:
    try:
        return load(vm.config, VmConfig, _recover_vm(vm))
    except NotFound:
        raise NotFound(f"no VM named {vm.name!r}") from None


def load_runtime(vm: VmPaths) -> Runtime:
    """The runtime record; a VM that never ran has none and is stopped."""
    try:
        return load(vm.runtime, Runtime, _recover_vm(vm))
    except NotFound:
        return Runtime()


def _recover_vm(vm: VmPaths) -> str:
    return f"restore it, or remove the VM with 'agent-vm destroy --force {vm.name}'"


def vm_names(layout: StateLayout) -> list[str]:
    """Names of all VMs (directories with a vm.json), sorted. One we cannot
    look into is listed too: loading it reports it as broken, and `destroy
    --force` can remove it."""
    try:
        entries = sorted(layout.vms.iterdir())
    except FileNotFoundError:
        return []
    return [e.name for e in entries if not e.name.startswith(".") and _has_config(e)]


def _has_config(vm_dir: Path) -> bool:
    try:
        (vm_dir / "vm.json").lstat()
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError:
        return True
    return True
