# What the rest of NixOS defines that agent-vm's modules read or add to:
# the values modules this harness does not evaluate would give (the
# system's build products, fixed ids, the standard groups), and the one
# addition of theirs the guest's SSH depends on, and what the modules
# behind the options agent-vm sets define alongside them (the CA bundle's
# /etc entries, nginx's user and unit, nix-daemon's unit), so that a
# definition of ours that would clash with theirs clashes here too.
{ config, lib, pkgs, ... }:
let
  # nixos/modules/security/ca.nix: the bundle (no extra certificates).
  caBundle = "${pkgs.cacert}/etc/ssl/certs/ca-bundle.crt";
in
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

  # nixos/modules/security/ca.nix (security.pki.installCACerts, default
  # true): the system trust store and its compatibility names.
  environment.etc = {
    "ssl/certs/ca-certificates.crt".source = caBundle;
    "ssl/certs/ca-bundle.crt".source = caBundle;
    "pki/tls/certs/ca-bundle.crt".source = caBundle;
    "ssl/trust-source".source = "${pkgs.cacert.p11kit}/etc/ssl/trust-source";
  };
  # nixos/modules/services/system/nix-daemon.nix: the unit's environment
  # (curl's bundle is nixpkgs', not /etc's; Nix itself reads /etc's).
  systemd.services.nix-daemon = lib.mkIf config.nix.enable {
    environment.CURL_CA_BUNDLE = caBundle;
    unitConfig.RequiresMountsFor = "/nix/store";
    serviceConfig = {
      LimitNOFILE = 1048576;
      Delegate = "yes";
    };
  };
  # nixos/modules/services/web-servers/nginx/default.nix: its user and
  # group (ids 60 in nixos/modules/misc/ids.nix) and the parts of its unit
  # that meet ours.
  users.users.nginx = lib.mkIf (config.services.nginx.enable && config.services.nginx.user == "nginx") {
    group = config.services.nginx.group;
    isSystemUser = true;
    uid = 60;
  };
  users.groups.nginx = lib.mkIf (config.services.nginx.enable && config.services.nginx.group == "nginx") {
    gid = 60;
  };
  systemd.services.nginx = lib.mkIf config.services.nginx.enable {
    description = "Nginx Web Server";
    wantedBy = [ "multi-user.target" ];
    after = [ "network.target" ];
    serviceConfig = {
      ExecStart = "${pkgs.nginxStable}/bin/nginx -c /nix/store/00000000000000000000000000000000-nginx.conf";
      Restart = "always";
      RestartSec = "10s";
      User = config.services.nginx.user;
      Group = config.services.nginx.group;
      RuntimeDirectory = "nginx";
      NoNewPrivileges = true;
      ProtectSystem = "strict";
    };
  };
}
