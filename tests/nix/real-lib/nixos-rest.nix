# What the rest of NixOS defines that agent-vm's modules read or add to:
# the values modules this harness does not evaluate would give (the
# system's build products, fixed ids, the standard groups), and the one
# addition of theirs the guest's SSH depends on.
{ config, lib, pkgs, ... }:
{
  system.build = {
    toplevel = pkgs.runCommand "nixos-system-agent-vm-25.11" { } "";
    kernel = pkgs.runCommand "linux-6.12" { } "";
    initialRamdisk = pkgs.runCommand "initrd-linux-6.12" { } "";
  };
  # nixos/modules/system/boot/kernel.nix (x86_64)
  system.boot.loader.kernelFile = "bzImage";
  system.boot.loader.initrdFile = "initrd";
  # nixos/modules/misc/ids.nix
  ids.gids = {
    root = 0;
    wheel = 1;
    users = 100;
    kvm = 302;
  };
  nix.package = pkgs.nix;
  # nixos/modules/config/users-groups.nix defines these groups; systemd's
  # module adds systemd-journal, sshd.nix the sshd user and group.
  users.groups = {
    root.gid = 0;
    wheel.gid = 1;
    users.gid = 100;
    kvm.gid = 302;
    systemd-journal = { };
  };
  # nixos/modules/services/networking/ssh/sshd.nix adds its own
  # authorized keys files to the list.
  services.openssh.authorizedKeysFiles = lib.mkIf config.services.openssh.enable (
    lib.optional config.services.openssh.authorizedKeysInHomedir "%h/.ssh/authorized_keys"
    ++ [ "/etc/ssh/authorized_keys.d/%u" ]
  );
}
