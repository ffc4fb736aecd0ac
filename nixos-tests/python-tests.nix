# tests/unit and tests/nix inside a Nix build: the Python package against
# pytest-subprocess fakes, and lib/ evaluated by this nixpkgs' Nix with a
# private store (tests/nix/private-store.sh, which ./run-tests also runs as
# an unprivileged user without network).
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
    bash tests/nix/private-store.sh python -m pytest -ra tests/unit tests/nix
    touch $out
  ''
