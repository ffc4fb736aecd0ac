"""The egress verbs: `secret add/list/remove` and `logs --network`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .. import store, targets
from ..context import Context
from ..errors import InvalidInput
from ..events import warn
from ..models import Network
from ..paths import VmPaths
from ..state import alive
from . import netlog, secrets, setup
from .layout import EgressPaths
from .policy import placeholder


def _target_and_name(ctx: Context, words: list[str]) -> tuple[VmPaths, str]:
    if len(words) > 2:
        raise InvalidInput("expected [BRANCH] NAME")
    target = words[0] if len(words) == 2 else None
    return targets.resolve(ctx, target), words[-1]


def cmd_secret(ctx: Context, a: argparse.Namespace) -> int:
    action = a.secret_verb
    if action == "list":
        return _list(targets.resolve(ctx, a.target), a.json)
    vm, name = _target_and_name(ctx, a.words)
    paths = EgressPaths(vm.dir)
    with ctx.lock(vm.name):
        cfg = store.load_config(vm)
        if action == "add":
            secret = secrets.add(
                paths,
                name,
                a.domain,
                a.header,
                Path(a.from_file) if a.from_file else None,
                a.from_env,
            )
            where = f"read from {secret.file} at each start" if secret.file else "stored 0600"
            print(
                f"secret {name} for {', '.join(secret.domains)} ({where}); "
                f"the guest sees {name}={placeholder(name)}"
            )
        else:
            secrets.remove(paths, name)
            print(f"removed secret {name} from VM {vm.name}")
        setup.refresh(vm.dir, ctx.layout.root)
    if cfg.network != Network.ALLOW:
        warn(
            f"VM {vm.name} has --network {cfg.network.value}: secrets are added only "
            "with --network allow",
            hint=f"agent-vm update {vm.name} --network allow",
        )
    elif alive(store.load_runtime(vm), vm.dir):
        warn(
            f"VM {vm.name} is running: its proxy uses this now; the guest's "
            "environment changes at the next start"
        )
    return 0


def _list(vm: VmPaths, as_json: bool) -> int:
    listed = secrets.load(EgressPaths(vm.dir))
    if as_json:
        sys.stdout.write(listed.model_dump_json(indent=2) + "\n")
        return 0
    if not listed.secrets:
        print(f"VM {vm.name} has no secrets")
    for s in listed.secrets:
        source = f"file {s.file}" if s.file else "stored"
        header = f", header {s.header}" if s.header else ""
        print(f"{s.name}: {', '.join(s.domains)}{header} ({source})")
    return 0


def network_logs(vm: VmPaths, follow: bool, as_json: bool) -> int:
    log = EgressPaths(vm.dir).log
    entries = netlog.follow(log) if follow else netlog.read(log)
    try:
        for e in entries:
            line = json.dumps(e.model_dump(mode="json")) if as_json else netlog.render(e)
            sys.stdout.write(line + "\n")
            sys.stdout.flush()
    except KeyboardInterrupt:
        pass
    return 0
