#!/usr/bin/env bash
# Runs "$@" in the environment the flake's python-tests check gives the
# tests (nixos-tests/python-tests.nix runs this file): HOME and a private,
# empty Nix store under $TMPDIR, the recipe nixpkgs' own lib tests use.
# ./run-tests runs it too (tests/nix/like-a-nix-build.sh), as an
# unprivileged user without network, so a test that passes only against
# /nix/store, as root or online fails here before it fails in a Nix build.
set -euo pipefail
: "${TMPDIR:?TMPDIR must be set (a Nix build sets it)}"
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
exec "$@"
