#!/usr/bin/env bash
# Builds (or reuses) the Debian guest that stands in for the NixOS closure
# in the end-to-end tests: a generic kernel, a small initrd and an ext4 root
# image with systemd, openssh-server and the agent service as the NixOS
# guest has it: mcp-proxy with the project's workspace MCP server, as its
# own user on guest loopback, behind nginx checking the VM's token.
#
# The result is cached under $AGENT_VM_TEST_CACHE (default
# /var/cache/agent-vm-tests) in a directory named after a hash of this
# script, files/ and modules/agent/, so any change to what makes the guest
# rebuilds it. mcp-proxy comes from PyPI (files/mcp-requirements.txt),
# installed with the host's pip for the guest's Python (3.11, bookworm).
# Prints that directory as the last line of stdout. Needs root (mmdebstrap
# into a directory, mkfs.ext4 -d with root-owned files).
set -euo pipefail
here="$(cd "$(dirname "$(readlink -f "$0")")" && pwd)"
agent="$(cd "$here/../../../modules/agent" && pwd)"
cache="${AGENT_VM_TEST_CACHE:-/var/cache/agent-vm-tests}"
suite="${AGENT_VM_TEST_SUITE:-bookworm}"
mirror="${AGENT_VM_TEST_MIRROR:-http://deb.debian.org/debian}"

inputs() {
  cat "$here/build-guest.sh"
  echo "$suite $mirror"
  for d in "$here/files" "$agent"; do
    (cd "$d" && find . -type f ! -name '*.pyc' | LC_ALL=C sort | while read -r f; do echo "$f"; cat "$f"; done)
  done
}
key="$(inputs | sha256sum | cut -c1-16)"
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
  nginx-light python3
  qemu-guest-agent
)
echo "build-guest: mmdebstrap $suite into $work" >&2
mmdebstrap --mode=root --variant=apt --quiet \
  --include="$(IFS=,; echo "${packages[*]}")" \
  --customize-hook="'$here/files/customize.sh' \"\$1\" '$here/files' '$agent'" \
  "$suite" "$root" "$mirror" >&2

# mcp-proxy and the MCP SDK: wheels for the guest's CPython 3.11 whatever
# Python runs here, compiled by the guest's own Python (no compiling at boot:
# the directory is not writable by the service).
echo "build-guest: pip install mcp-proxy into the guest" >&2
PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --no-warn-conflicts --disable-pip-version-check --target "$root/opt/agent-vm-mcp" --no-compile \
  --only-binary=:all: --implementation cp --python-version 3.11 --abi cp311 --abi abi3 --abi none \
  --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 --platform manylinux_2_34_x86_64 \
  --platform any -r "$here/files/mcp-requirements.txt" >&2
chroot "$root" python3 -m compileall -q /opt/agent-vm-mcp >&2

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
