#!/bin/sh
# mmdebstrap customize hook: turns the bootstrapped tree ($1) into the test
# guest, with the files from $2 and the agent's shared pieces from $3
# (modules/agent). Runs on the host; guest commands go through chroot.
set -eu
root="$1"
files="$2"

# A small initrd: only the modules needed to mount a virtio ext4 root.
install -m 0644 "$files/initramfs-modules" "$root/etc/initramfs-tools/modules"
printf 'MODULES=list\nCOMPRESS=gzip\n' >"$root/etc/initramfs-tools/conf.d/agent-vm.conf"
chroot "$root" update-initramfs -u -k all

echo agent-vm >"$root/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 agent-vm\n' >"$root/etc/hosts"
printf 'nameserver 10.0.2.3\n' >"$root/etc/resolv.conf"
install -m 0644 "$files/fstab" "$root/etc/fstab"
install -D -m 0755 "$files/agent-vm-workspace-generator" \
  "$root/etc/systemd/system-generators/agent-vm-workspace"
mkdir -p "$root/workspace"

# No host keys baked into the image: the VM's key arrives as a credential.
rm -f "$root"/etc/ssh/ssh_host_*
install -m 0644 "$files/sshd-agent-vm.conf" "$root/etc/ssh/sshd_config.d/agent-vm.conf"

install -m 0644 "$files/10-virtio.network" "$root/etc/systemd/network/10-virtio.network"
install -m 0644 "$files/modprobe-agent-vm.conf" "$root/etc/modprobe.d/agent-vm.conf"

install -m 0755 "$files/agent-vm-setup" "$root/usr/local/sbin/agent-vm-setup"
# The image's CA bundle, which agent-vm-setup extends with the egress
# proxy's CA at boot.
install -D -m 0644 "$root/etc/ssl/certs/ca-certificates.crt" "$root/usr/local/share/agent-vm/ca-certificates.crt"
install -m 0644 "$files/agent-vm-setup.service" "$root/etc/systemd/system/agent-vm-setup.service"
install -m 0644 "$files/agent-vm-agent.service" "$files/agent-vm-agent-setup.service" \
  "$root/etc/systemd/system/"
install -m 0644 "$files/agent-vm-growfs.service" "$root/etc/systemd/system/agent-vm-growfs.service"
mkdir -p "$root/etc/systemd/system/ssh.service.d"
install -m 0644 "$files/ssh-after-setup.conf" "$root/etc/systemd/system/ssh.service.d/agent-vm.conf"

# The agent: mcp-proxy (installed by build-guest.sh) with the project's own
# workspace server, as its own user, behind nginx on the agent port. The
# scripts shared with the NixOS guest come from modules/agent ($3).
chroot "$root" useradd --system --home-dir /var/lib/agent-mcp --create-home \
  --shell /usr/sbin/nologin agent-mcp
install -d "$root/usr/local/lib/agent-vm" "$root/etc/agent-vm"
install -m 0755 "$3/agent-auth-conf.sh" "$root/usr/local/lib/agent-vm/agent-auth-conf"
install -m 0755 "$3/with-env-file.sh" "$root/usr/local/lib/agent-vm/with-env-file"
install -m 0644 "$3/workspace_server.py" "$3/nginx-agent-location.conf" "$files/e2e_env_server.py" \
  "$root/usr/local/lib/agent-vm/"
install -m 0644 "$files/mcp-servers.json" "$root/etc/agent-vm/mcp-servers.json"
rm -f "$root/etc/nginx/sites-enabled/default"
install -m 0644 "$files/nginx-agent-vm.conf" "$root/etc/nginx/conf.d/agent-vm.conf"
mkdir -p "$root/etc/systemd/system/nginx.service.d"
install -m 0644 "$files/nginx-after-setup.conf" "$root/etc/systemd/system/nginx.service.d/agent-vm.conf"

chroot "$root" systemctl enable systemd-networkd.service agent-vm-setup.service agent-vm-agent.service \
  agent-vm-growfs.service
# Nothing on the way to sshd that need not be there.
chroot "$root" systemctl mask \
  systemd-networkd-wait-online.service apt-daily.timer apt-daily-upgrade.timer \
  e2scrub_all.timer e2scrub_reap.service fstrim.timer getty@tty1.service \
  systemd-random-seed.service \
  modprobe@drm.service modprobe@dm_mod.service modprobe@efi_pstore.service modprobe@loop.service
chroot "$root" passwd -l root >/dev/null

rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb
