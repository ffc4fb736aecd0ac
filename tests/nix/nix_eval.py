"""Evaluating Nix from the tests: `nix-instantiate --eval --strict --json`.

Values reach Nix only as --argstr (paths, JSON, hostile strings), never
spliced into Nix source: the same rule the product follows. Without
nix-instantiate the tests fail; they never skip.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
LIB = ROOT / "lib"


class NixError(Exception):
    """nix-instantiate failed; the message is its stderr."""


def nix_instantiate() -> str:
    path = shutil.which("nix-instantiate")
    if path is None:
        pytest.fail("nix-instantiate is missing: install nix-bin (./run-tests does)")
    return path


def evaluate_file(expr: Path, **argstrs: str) -> Any:
    """Evaluate the function in `expr` applied to `argstrs` (all strings)."""
    argv = [nix_instantiate(), "--eval", "--strict", "--json", str(expr)]
    for k, v in argstrs.items():
        argv += ["--argstr", k, v]
    res = subprocess.run(argv, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise NixError(res.stderr)
    return json.loads(res.stdout)


def write_expr(directory: Path, name: str, text: str) -> Path:
    f = directory / name
    f.write_text(text)
    return f


def contract_example() -> dict[str, Any]:
    """The params.json example of docs/contract.md: the file the CLI writes."""
    doc = (ROOT / "docs" / "contract.md").read_text()
    (block,) = re.findall(r"```json\n(.*?)```", doc, flags=re.S)
    data: dict[str, Any] = json.loads(block)
    return data
