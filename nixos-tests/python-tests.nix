# tests/unit and tests/nix inside a Nix build: the Python package against
# pytest-subprocess fakes, and lib/ evaluated by this nixpkgs' Nix with a
# private store (the recipe nixpkgs' own lib tests use).
{ pkgs, self }:
let
  python = import ../python/test-env.nix pkgs.python3;
in
pkgs.runCommand "agent-vm-python-tests"
  {
    nativeBuildInputs = [
      python
      pkgs.nix
      pkgs.git
      pkgs.openssh
      pkgs.e2fsprogs
      pkgs.qemu_kvm
      pkgs.mcp-proxy
      pkgs.procps
      pkgs.util-linux
    ];
  }
  ''
    cp -r ${self} src
    chmod -R u+w src
    cd src
    export HOME=$TMPDIR/home
    mkdir -p "$HOME"
    export TEST_ROOT=$TMPDIR/nix-test
    export NIX_BUILD_HOOK=
    export NIX_CONF_DIR=$TEST_ROOT/etc
    export NIX_LOCALSTATE_DIR=$TEST_ROOT/var
    export NIX_LOG_DIR=$TEST_ROOT/var/log/nix
    export NIX_STATE_DIR=$TEST_ROOT/var/nix
    export NIX_STORE_DIR=$TEST_ROOT/store
    export PAGER=cat
    nix-store --init
    export AGENT_VM_FORBID_SKIPS=1
    python -m pytest -ra tests/unit tests/nix
    touch $out
  ''
