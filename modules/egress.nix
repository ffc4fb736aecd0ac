# The guest's side of the host's egress proxy (`--network allow`): when the
# runner hands in the proxy's CA certificate and environment as fw_cfg
# credentials, the guest trusts the CA (for the domains the proxy adds
# secrets to) and every program gets the proxy settings and the secrets'
# placeholders. Nothing here is needed for safety: QEMU lets nothing else
# out, whatever the guest does; it only makes the allowed traffic work.
#
# The guest system is the same for every network mode: what differs per VM
# arrives at boot, so switching a VM's mode does not rebuild it.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  cfg = config.agent-vm.egress;
  inherit (import ../lib { }) egress;
  inherit (lib) mkOption mkIf types;

  runDir = "/run/agent-vm";
  bundle = "${runDir}/ca-certificates.crt";
  envFile = "${runDir}/egress.env";
in
{
  options.agent-vm.egress = {
    enable = mkOption {
      type = types.bool;
      default = true;
      example = false;
      description = ''
        Use the host's egress proxy when the VM has one (`--network allow`):
        the proxy's CA joins the system trust store and its settings
        (`http_proxy`, `https_proxy`, the secrets' placeholder variables)
        reach login shells, the agent service and nix-daemon. The proxy
        is the only way out either way; this makes the allowed traffic
        work.
      '';
    };
    caBundle = mkOption {
      type = types.str;
      readOnly = true;
      default = bundle;
      description = ''
        The system trust store, made at boot: nixpkgs' CA bundle plus the
        proxy's CA when the VM has one. `/etc/ssl/certs/ca-certificates.crt`
        points here.
      '';
    };
    environmentFile = mkOption {
      type = types.str;
      readOnly = true;
      default = envFile;
      description = ''
        `NAME=value` lines (proxy settings, placeholders) handed in by the
        host at boot; empty without a proxy. For a unit of yours:
        `serviceConfig.EnvironmentFile = config.agent-vm.egress.environmentFile;`.
      '';
    };
  };

  config = mkIf cfg.enable {
    systemd.services.agent-vm-egress = {
      description = "Install the egress proxy's CA and environment from the boot credentials";
      wantedBy = [ "multi-user.target" ];
      before = [
        "agent-vm-agent.service"
        "nix-daemon.service"
        "sshd.service"
      ];
      serviceConfig = {
        Type = "oneshot";
        RemainAfterExit = true;
        ImportCredential = [
          egress.credentials.ca
          egress.credentials.env
        ];
      };
      script = ''
        install -d -m 0755 ${runDir}
        ca="$CREDENTIALS_DIRECTORY/${egress.credentials.ca}"
        env="$CREDENTIALS_DIRECTORY/${egress.credentials.env}"
        if [ -s "$ca" ]; then
          install -m 0644 "$ca" ${runDir}/egress-ca.pem
          cat ${pkgs.cacert}/etc/ssl/certs/ca-bundle.crt "$ca" > ${bundle}.tmp
        else
          cp ${pkgs.cacert}/etc/ssl/certs/ca-bundle.crt ${bundle}.tmp
        fi
        chmod 0644 ${bundle}.tmp
        mv ${bundle}.tmp ${bundle}
        if [ -s "$env" ]; then install -m 0644 "$env" ${envFile}; else : > ${envFile}; fi
      '';
    };

    # The trust store is made at boot (above), so every TLS client that
    # reads the system store trusts the proxy's CA; without a proxy it is
    # nixpkgs' bundle unchanged.
    environment.etc."ssl/certs/ca-certificates.crt".source = lib.mkForce bundle;
    environment.etc."ssl/certs/ca-bundle.crt".source = lib.mkForce bundle;
    environment.etc."pki/tls/certs/ca-bundle.crt".source = lib.mkForce bundle;

    # Login shells and `ssh host cmd` (bash reads /etc/set-environment).
    environment.extraInit = ''
      if [ -r ${envFile} ]; then
        set -a
        . ${envFile}
        set +a
      fi
    '';
    systemd.services.agent-vm-agent = mkIf config.agent-vm.agent.enable {
      after = [ "agent-vm-egress.service" ];
      serviceConfig.EnvironmentFile = [ "-${envFile}" ];
    };
    systemd.services.nix-daemon = mkIf config.nix.enable {
      after = [ "agent-vm-egress.service" ];
      serviceConfig.EnvironmentFile = [ "-${envFile}" ];
    };
  };
}
