"""The files the egress proxy and the guest need, written by the CLI.

`prepare` runs at every `start` of a `--network allow` VM (before the
runner, which starts the engine): the engine's config (allowlist, secret
names and domains, never values) and the guest's environment (proxy
settings and placeholders), which QEMU hands the guest as a credential.
`refresh` rewrites the engine's config while it runs: the engine reloads
it at the next request, so `update --add-allow` and `secret add` apply at
once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from .. import store
from ..errors import InvalidInput
from ..fsutil import atomic_write, ensure_private_dir
from ..models import EgressConfig, Network, VmConfig
from ..paths import default_state_dir
from . import secrets
from .layout import GUEST_CA_PATH, GUEST_PROXY_URL, EgressPaths
from .patterns import PatternError, parse
from .policy import placeholder

# Loopback stays inside the guest; everything else goes to the proxy.
_NO_PROXY = "localhost,127.0.0.1,::1"


def check_patterns(patterns: list[str], flag: str) -> list[str]:
    """The patterns in their normal form; InvalidInput naming the flag."""
    try:
        return [str(parse(p)) for p in patterns]
    except PatternError as exc:
        raise InvalidInput(f"{flag} {exc}") from None


class AllowlistEdit(Protocol):
    allow: list[str] | None  # the whole list
    add_allow: list[str]
    remove_allow: list[str]


def edit_allowlist(current: list[str], ch: AllowlistEdit) -> list[str] | None:
    """`update`'s --allow (the whole list), --add-allow, --remove-allow; None: no change."""
    if ch.allow is None and not ch.add_allow and not ch.remove_allow:
        return None
    result = check_patterns(ch.allow, "--allow") if ch.allow is not None else list(current)
    for p in check_patterns(ch.add_allow, "--add-allow"):
        if p not in result:
            result.append(p)
    for p in check_patterns(ch.remove_allow, "--remove-allow"):
        if p not in result:
            raise InvalidInput(f"--remove-allow {p}: not on the allowlist ({', '.join(result)})")
        result.remove(p)
    return result


def engine_config(vm_dir: Path, cfg: VmConfig, state_root: Path) -> EgressConfig:
    paths = EgressPaths(vm_dir)
    shown_root = None if state_root == default_state_dir() else str(state_root)
    return EgressConfig(
        vm=cfg.name,
        branch=cfg.branch,
        allow=cfg.allow,
        secrets=secrets.load(paths).secrets,
        state_dir=shown_root,
    )


def guest_environment(vm_dir: Path) -> str:
    names = [s.name for s in secrets.load(EgressPaths(vm_dir)).secrets]
    lines = [
        f"{var}={GUEST_PROXY_URL}"
        for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY")
    ]
    lines += [f"no_proxy={_NO_PROXY}", f"NO_PROXY={_NO_PROXY}"]
    # Node.js (most coding agents) ignores the system store without this.
    lines.append(f"NODE_EXTRA_CA_CERTS={GUEST_CA_PATH}")
    lines += [f"{n}={placeholder(n)}" for n in names]
    return "\n".join(lines) + "\n"


def prepare(vm_dir: Path, cfg: VmConfig, state_root: Path) -> None:
    """Before the runner starts: the engine's config and the guest's environment."""
    paths = EgressPaths(vm_dir)
    ensure_private_dir(paths.dir)
    config = engine_config(vm_dir, cfg, state_root)
    for s in config.secrets:
        try:
            secrets.value_of(paths, s)
        except InvalidInput as exc:
            raise InvalidInput(f"secret {s.name}: {exc.message}", hint=exc.hint) from None
    store.save(paths.config, config)
    atomic_write(paths.guest_env, guest_environment(vm_dir))


def refresh(vm_dir: Path, state_root: Path) -> None:
    """After a change to the allowlist or the secrets: the running engine's config."""
    paths = EgressPaths(vm_dir)
    if not paths.config.exists():
        return  # never started with the proxy: `start` writes it
    cfg = store.load(vm_dir / "vm.json", VmConfig)
    if cfg.network == Network.ALLOW:
        store.save(paths.config, engine_config(vm_dir, cfg, state_root))
