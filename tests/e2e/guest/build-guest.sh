#!/usr/bin/env bash
# Builds (or reuses) the Debian guest that stands in for the NixOS closure
# in the end-to-end tests: a generic kernel, a small initrd and an ext4 root
# image with systemd, openssh-server and a tiny HTTP "agent".
#
# The result is cached under $AGENT_VM_TEST_CACHE (default
# /var/cache/agent-vm-tests) in a directory named after a hash of this
# script and files/, so any change to what makes the guest rebuilds it.
# Prints that directory as the last line of stdout. Needs root (mmdebstrap
# into a directory, mkfs.ext4 -d with root-owned files).
set -euo pipefail
here="$(cd "$(dirname "$(readlink -f "$0")")" && pwd)"
cache="${AGENT_VM_TEST_CACHE:-/var/cache/agent-vm-tests}"
suite="${AGENT_VM_TEST_SUITE:-bookworm}"
mirror="${AGENT_VM_TEST_MIRROR:-http://deb.debian.org/debian}"

key="$( (cat "$here/build-guest.sh"; echo "$suite $mirror"; cd "$here/files" && find . -type f | LC_ALL=C sort | while read -r f; do echo "$f"; cat "$f"; done) | sha256sum | cut -c1-16)"
out="$cache/guest-$key"

if [ -e "$out/ready" ]; then
  echo "$out"
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "build-guest: building the test guest needs root (or a cached $out)" >&2
  exit 1
fi

mkdir -p "$cache"
chmod 0755 "$cache"
# One builder at a time; a second one waits and then reuses the result.
exec 9>"$cache/.lock"
flock 9
if [ -e "$out/ready" ]; then
  echo "$out"
  exit 0
fi

work="$(mktemp -d "$cache/.build-XXXXXX")"
trap 'rm -rf "$work"' EXIT
root="$work/root"

packages=(
  systemd systemd-sysv udev dbus kmod
  linux-image-amd64 initramfs-tools
  openssh-server iproute2 busybox sudo git procps e2fsprogs
  curl ca-certificates
)
echo "build-guest: mmdebstrap $suite into $work" >&2
mmdebstrap --mode=root --variant=apt --quiet \
  --include="$(IFS=,; echo "${packages[*]}")" \
  --customize-hook="'$here/files/customize.sh' \"\$1\" '$here/files'" \
  "$suite" "$root" "$mirror" >&2

mkdir -p "$work/out"
install -m 0644 "$root"/boot/vmlinuz-* "$work/out/vmlinuz"
install -m 0644 "$root"/boot/initrd.img-* "$work/out/initrd.img"
rm -f "$root"/boot/vmlinuz-* "$root"/boot/initrd.img-* "$root"/vmlinuz* "$root"/initrd.img*

# Room for what the tests write on the guest disk; the runner's qcow2
# overlay keeps the image itself untouched.
used_mib="$(du -sm "$root" | cut -f1)"
size_mib=$((used_mib + 768))
truncate -s "${size_mib}M" "$work/out/rootfs.raw"
mkfs.ext4 -q -F -L agent-vm-root -d "$root" "$work/out/rootfs.raw"
chmod 0644 "$work/out/rootfs.raw"
touch "$work/out/ready"
chmod 0755 "$work/out"

mv "$work/out" "$out"
# Older guests are unreachable by key; keep the cache to one.
find "$cache" -maxdepth 1 -name 'guest-*' ! -path "$out" -exec rm -rf {} +
echo "$out"
