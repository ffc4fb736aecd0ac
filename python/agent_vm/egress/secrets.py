"""`agent-vm secret add/list/remove`: which credential the proxy adds, to which
domains. The value never enters the guest, params.json, the Nix store or a
log: it is stored 0600 in the VM's state dir (--from-env) or read from the
user's file at each start (--from-file); the guest sees a placeholder.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from .. import store
from ..errors import CorruptState, InvalidInput, NotFound
from ..fsutil import atomic_write, ensure_private_dir
from ..models import Secret, Secrets
from .layout import EgressPaths
from .patterns import PatternError, parse


def load(paths: EgressPaths) -> Secrets:
    if not paths.secrets_index.exists():
        return Secrets()
    return store.load(paths.secrets_index, Secrets)


def _save(paths: EgressPaths, secrets: Secrets) -> None:
    ensure_private_dir(paths.dir)
    store.save(paths.secrets_index, secrets)


def check_value(value: str, where: str) -> str:
    """A value as it goes into an HTTP header: one line, no control characters."""
    value = value.rstrip("\r\n")
    if not value:
        raise InvalidInput(f"{where} is empty")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value if c != "\t"):
        raise InvalidInput(f"{where} contains a line break or control character")
    return value


def add(  # noqa: PLR0917 - the verb's arguments, each its own
    paths: EgressPaths,
    name: str,
    domains: list[str],
    header: str | None,
    from_file: Path | None,
    from_env: str | None,
) -> Secret:
    """Add or replace the secret `name`."""
    if (from_file is None) == (from_env is None):
        raise InvalidInput("give exactly one of --from-file PATH and --from-env VAR")
    try:
        for d in domains:
            parse(d)
    except PatternError as exc:
        raise InvalidInput(f"--domain {exc}") from None
    try:
        secret = Secret(
            name=name,
            domains=domains,
            header=header,
            file=str(from_file.absolute()) if from_file is not None else None,
        )
    except ValueError as exc:
        raise InvalidInput(f"secret {name!r}: {_first_error(exc)}") from None
    if from_file is not None:
        read_file(from_file)  # readable and well-formed now, not only at start
    else:
        assert from_env is not None
        value = os.environ.get(from_env)
        if value is None:
            raise InvalidInput(f"--from-env {from_env}: the variable is not set")
        value = check_value(value, f"--from-env {from_env}")
        ensure_private_dir(paths.secrets_dir)
        atomic_write(paths.secret_value(name), value + "\n")
    current = load(paths)
    kept = [s for s in current.secrets if s.name != name]
    _save(paths, Secrets(secrets=[*kept, secret]))
    if from_file is not None:
        # A stored value of an earlier --from-env secret of that name goes.
        with contextlib.suppress(FileNotFoundError):
            paths.secret_value(name).unlink()
    return secret


def remove(paths: EgressPaths, name: str) -> None:
    current = load(paths)
    if not any(s.name == name for s in current.secrets):
        raise NotFound(f"no secret named {name!r}", hint="see 'agent-vm secret list'")
    _save(paths, Secrets(secrets=[s for s in current.secrets if s.name != name]))
    with contextlib.suppress(FileNotFoundError):
        paths.secret_value(name).unlink()


def read_file(path: Path) -> str:
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"cannot read the secret file {path}: {exc}") from None
    return check_value(text, f"the secret file {path}")


def value_of(paths: EgressPaths, secret: Secret) -> str:
    """The value, read now (the engine calls this at start and on reload)."""
    if secret.file is not None:
        return read_file(Path(secret.file))
    stored = paths.secret_value(secret.name)
    try:
        return check_value(stored.read_text(), f"the stored value of {secret.name}")
    except FileNotFoundError:
        raise CorruptState(
            f"the value of secret {secret.name} is missing ({stored})",
            hint=f"add it again: agent-vm secret add {secret.name} …",
        ) from None


def _first_error(exc: ValueError) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        first = errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        return f"{where}: {first.get('msg')}" if where else str(first.get("msg"))
    return str(exc)
