"""Unit-test fakes: let pytest-subprocess's `fp` see plumbum's processes.

plumbum imports Popen into its own module and runs the resolved program
path (/usr/bin/git). The shim below hands every plumbum launch to
`subprocess.Popen` (which `fp` replaces) with argv[0] reduced to the
program name, so fakes are registered as ["git", …] on any host.
"""

from __future__ import annotations

import importlib
import os
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

# `plumbum.machines.local` the attribute is the LocalMachine object; we need
# the module of that name.
plumbum_local = importlib.import_module("plumbum.machines.local")


# The environment of each launch, for tests of what a command is given.
LAUNCH_ENVS: list[dict[str, str]] = []


def _popen_by_name(argv: list[str], *args: Any, **kwargs: Any) -> Any:
    argv = [os.path.basename(str(argv[0])), *map(str, argv[1:])]
    LAUNCH_ENVS.append(dict(kwargs.get("env") or {}))
    return subprocess.Popen(argv, *args, **kwargs)


@pytest.fixture(autouse=True)
def plumbum_through_subprocess(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(plumbum_local, "Popen", _popen_by_name)
    LAUNCH_ENVS.clear()
    yield
