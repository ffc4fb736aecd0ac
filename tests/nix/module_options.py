"""The NixOS modules' option declarations, evaluated with a stand-in lib
(tests/nix/stub-lib.nix) into a flat list per module: path, type, bounds,
description, example/default, internal, readOnly. The `options` fixture is
shared by the tests of the modules and of the flake."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from nix_eval import ROOT, evaluate_file, write_expr

STUB_LIB = Path(__file__).with_name("stub-lib.nix")
MODULES = ["guest.nix", "agent-service.nix", "egress.nix", "host.nix"]

EXPR = r"""
{ stubLib, module }:
let
  lib = import (/. + stubLib) { };
  mod = import (/. + module) {
    inherit lib;
    config = throw "options must not depend on config";
    pkgs = throw "options must not need pkgs";
    utils = throw "options must not need utils";
    modulesPath = "/modules";
  };
  describe = path: opt: {
    path = builtins.concatStringsSep "." path;
    type = opt.type.name or null;
    # What the type lets through, where the stub records it.
    bounds = if opt.type ? lo then [ opt.type.lo opt.type.hi ] else null;
    pattern = opt.type.re or null;
    description = opt.description or null;
    hasExample = opt ? example;
    hasDefault = opt ? default || opt ? defaultText;
    # The default's value where it is plain data (not a package or a
    # value computed from config).
    default =
      let r = builtins.tryEval (builtins.toJSON (opt.default or null)); in
      if opt ? default && r.success then builtins.fromJSON r.value else null;
    internal = opt.internal or false;
    readOnly = opt.readOnly or false;
  };
  # Options inside a submodule, wherever the submodule sits in the type.
  subOptions = t:
    if t.name or null == "submodule" then t.options
    else if t ? elem then subOptions t.elem
    else null;
  walk = prefix: attrs:
    builtins.concatMap (n:
      let v = attrs.${n}; path = prefix ++ [ n ]; in
      if (v._type or null) == "option" then
        let sub = subOptions v.type; in
        [ (describe path v) ]
        ++ (if sub == null then [ ] else walk (path ++ [ "<name>" ]) sub)
      else if builtins.isAttrs v then walk path v
      else [ ]
    ) (builtins.attrNames attrs);
in
walk [ ] (mod.options or { })
"""


@pytest.fixture(scope="module")
def options(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    expr = write_expr(tmp_path_factory.mktemp("modules"), "options.nix", EXPR)
    return {
        m: evaluate_file(expr, stubLib=str(STUB_LIB), module=str(ROOT / "modules" / m))
        for m in MODULES
    }
