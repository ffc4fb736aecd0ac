#!/usr/bin/env bash
# The flake's python-tests check (nixos-tests/python-tests.nix) as closely
# as this machine allows: pytest over a copy of the source, as an
# unprivileged user, in a network namespace with loopback only, with a
# private Nix store (tests/nix/private-store.sh). ./run-tests runs it after
# the main pass. Without root there is no user switch and no network
# namespace; the copy and the private store remain.
#
# Usage: like-a-nix-build.sh USER PYTHON [pytest arguments...]
set -euo pipefail
user=$1 python=$2
shift 2
root=$(cd "$(dirname "$0")/../.." && pwd)
# Short: tests put unix sockets (107 bytes at most) under $TMPDIR, which
# a Nix build has at /build.
work=$(mktemp -d /tmp/avm.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir "$work/src" "$work/tmp"
# The source as `nix flake check` copies it: no .git, no local venv.
tar -C "$root" -c --exclude=./.git --exclude=./.venv . | tar -C "$work/src" -x
cd "$work/src"
run=(env -i "PATH=$(dirname "$python"):/usr/bin:/bin" "TMPDIR=$work/tmp"
     bash tests/nix/private-store.sh "$python" -m pytest -ra "$@")
if [ "$(id -u)" != 0 ]; then
  echo "like-a-nix-build: not root: as $(id -un), with the network" >&2
  "${run[@]}"
  exit
fi
chmod 0755 "$work"
chown -R "$user:" "$work"
# `ip` brings loopback up: a Nix build's namespace has it (tests bind
# 127.0.0.1), and nothing else.
unshare --net -- sh -c 'ip link set lo up && exec "$@"' sh \
  setpriv --reuid="$user" --regid="$user" --init-groups -- "${run[@]}"
