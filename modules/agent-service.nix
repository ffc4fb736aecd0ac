# The agent service: nixpkgs' mcp-proxy, serving the declared MCP servers
# over HTTP (SSE and streamable HTTP) on guest loopback, behind nginx on the
# agent port. nginx lets a request through only with the VM's token
# (`Authorization: Bearer`, from the boot credential) and a Host header
# naming the host-side address (no DNS rebinding). The servers run as their
# own user, not the SSH user, with the VM's MCP secrets (a boot credential
# only their unit reads). The CLI's readiness check and `status` read
# mcp-proxy's GET /status through nginx (200 once every server has started).
{
  config,
  lib,
  pkgs,
  utils,
  ...
}:
let
  cfg = config.agent-vm.agent;
  agentLib = import ../lib { };
  inherit (agentLib) credentials;

  # The token-bearing nginx maps, written at boot from the credential
  # (agent/agent-auth-conf.sh) into tmpfs, readable by root and nginx only.
  authDir = "/run/agent-vm-agent";
  authConf = "${authDir}/nginx-auth.conf";
  nginxGroup = config.services.nginx.group;
  serversHome = "/var/lib/${cfg.user}";

  inherit (lib)
    mkOption
    mkDefault
    mkIf
    types
    literalExpression
    ;

  serverType = types.submodule {
    options = {
      enable = mkOption {
        type = types.bool;
        default = true;
        example = false;
        description = "Whether mcp-proxy serves this server.";
      };
      command = mkOption {
        type = types.str;
        example = literalExpression ''lib.getExe pkgs.github-mcp-server'';
        description = "The server's program (a stdio MCP server).";
      };
      args = mkOption {
        type = types.listOf types.str;
        default = [ ];
        example = [ "stdio" ];
        description = "Arguments to the server's program.";
      };
      env = mkOption {
        type = types.attrsOf types.str;
        default = { };
        example = {
          LOG_LEVEL = "info";
        };
        description = ''
          Environment for the server. These values are in the Nix store:
          give secrets to the VM with `agent-vm up --mcp-env FILE` (or the
          host module's `mcpEnvironmentFile`) instead.
        '';
      };
    };
  };

  configFile = pkgs.writeText "agent-vm-mcp-servers.json" (
    builtins.toJSON (agentLib.mcpProxyConfig cfg.servers)
  );

  workspaceServer = pkgs.writers.writePython3Bin "agent-vm-workspace-mcp" {
    libraries = [ pkgs.python3Packages.mcp ];
    flakeIgnore = [ "E501" ];
  } (builtins.readFile ./agent/workspace_server.py);

  enabledServers = lib.filterAttrs (_: s: s.enable) cfg.servers;
in
{
  options.agent-vm.agent = {
    enable = mkOption {
      type = types.bool;
      default = true;
      example = false;
      description = ''
        Whether to run the agent service (nginx on
        {option}`agent-vm.agent.port` in front of mcp-proxy). Without it,
        `agent-vm start` still waits for the port to answer `GET /status`
        with 200 to the VM's token: disable it only for a guest whose own
        service does that.
      '';
    };

    package = lib.mkPackageOption pkgs "mcp-proxy" { };

    port = mkOption {
      type = types.port;
      default = 8000;
      example = 3000;
      description = ''
        The agent port inside the guest, where nginx checks the token and
        the Host header. The runner forwards the VM's agent port on the
        host to it.
      '';
    };

    backendPort = mkOption {
      type = types.port;
      default = 8001;
      example = 9000;
      description = ''
        The port mcp-proxy listens on, on guest loopback only: reached
        through nginx on {option}`agent-vm.agent.port`, never directly.
      '';
    };

    user = mkOption {
      type = types.strMatching "[a-z_][a-z0-9_-]{0,31}";
      default = "agent-mcp";
      example = "mcp";
      description = ''
        The user mcp-proxy and the MCP servers run as: a system user of
        this name in a group of the same name, made for them (declare
        `users.users.<name>` in your module to make it otherwise). Not the
        guest user the agent works as: that user could
        read the servers' secrets from their process environment. It can
        read the workspace (what is world-readable there) but not write it,
        and anything a server runs from the workspace (git reading
        `.git/config`, package scripts) runs as this user, with the
        secrets: see docs/threat-model.md.
      '';
    };

    servers = mkOption {
      type = types.attrsOf serverType;
      default = { };
      example = literalExpression ''
        {
          github = {
            command = lib.getExe pkgs.github-mcp-server;
            args = [ "stdio" ];
          };
          workspace.enable = false;
        }
      '';
      description = ''
        The MCP servers mcp-proxy exposes, each at
        `http://<host>:<agent port>/servers/<name>/sse` (SSE) and
        `…/servers/<name>/mcp/` (streamable HTTP). `workspace`, a small
        read-only view of the workspace, is there unless disabled.
      '';
    };

    environmentFile = mkOption {
      type = types.nullOr (types.strMatching "/.+");
      default = null;
      example = "/run/secrets/agent-vm-mcp.env";
      description = ''
        A file in the guest of `NAME=value` lines read when the service
        starts (systemd's `EnvironmentFile=`) and passed on to every
        server; when it does not exist the service starts without it. It
        must be one the guest user cannot read (never under the workspace,
        which the agent reads and writes): the usual way to give the
        servers secrets is the host side's `agent-vm up --mcp-env FILE` (or
        the host module's `mcpEnvironmentFile`), handed in at boot as a
        credential only this service reads.
      '';
    };

    path = mkOption {
      type = types.listOf types.package;
      default = [ pkgs.git ];
      defaultText = literalExpression "[ pkgs.git ]";
      example = literalExpression "[ pkgs.git pkgs.nodejs ]";
      description = "Packages on the servers' PATH.";
    };

    extraArgs = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [
        "--allow-origin"
        "http://localhost:3000"
      ];
      description = "Further mcp-proxy arguments.";
    };
  };

  config = mkIf cfg.enable {
    agent-vm.agent.servers.workspace = {
      command = mkDefault "${workspaceServer}/bin/agent-vm-workspace-mcp";
      env.AGENT_VM_WORKSPACE = mkDefault config.agent-vm.workspace.mountPoint;
    };

    assertions = [
      {
        assertion = cfg.user != config.agent-vm.user.name;
        message = ''
          agent-vm.agent.user must not be the guest user (${cfg.user}): the
          agent could read the MCP servers' secrets from their environment.
        '';
      }
      {
        assertion =
          cfg.environmentFile == null
          || !(lib.hasPrefix "${config.agent-vm.workspace.mountPoint}/" cfg.environmentFile);
        message = ''
          agent-vm.agent.environmentFile is in the workspace, which the agent
          reads: use `agent-vm up --mcp-env FILE` on the host instead.
        '';
      }
      {
        assertion = cfg.port != cfg.backendPort;
        message = "agent-vm.agent.port and agent-vm.agent.backendPort must differ.";
      }
      {
        assertion = enabledServers != { };
        message = ''
          agent-vm.agent: mcp-proxy needs at least one enabled server in
          agent-vm.agent.servers (or set agent-vm.agent.enable = false).
        '';
      }
    ];

    networking.firewall.allowedTCPPorts = [ cfg.port ];

    # The servers' user, made under whatever name is set (the unit's Group
    # reads it). Defaults only: a module of yours may declare it otherwise;
    # its group is made when it is the user's own, its home created when it
    # is the one set here.
    users.users.${cfg.user} = {
      isSystemUser = mkDefault true;
      group = mkDefault cfg.user;
      home = mkDefault serversHome;
      createHome = mkDefault (config.users.users.${cfg.user}.home == serversHome);
    };
    users.groups.${cfg.user} = mkIf (config.users.users.${cfg.user}.group == cfg.user) { };

    # The token check in front of mcp-proxy. The maps with the token are
    # included from tmpfs (written by agent-vm-agent-auth at boot), so the
    # token is in neither the store nor nginx's generated configuration.
    services.nginx = {
      enable = true;
      appendHttpConfig = ''
        include ${authConf};
      '';
      # "Bearer <64 hex digits>" is longer than the default bucket's 64 bytes.
      mapHashBucketSize = mkDefault 128;
      virtualHosts.agent-vm-agent = {
        default = true;
        listen = [
          {
            addr = "0.0.0.0";
            inherit (cfg) port;
          }
        ];
        locations."/" = {
          proxyPass = "http://127.0.0.1:${toString cfg.backendPort}";
          extraConfig = builtins.readFile ./agent/nginx-agent-location.conf;
        };
      };
    };
    systemd.services.agent-vm-agent-auth = {
      description = "agent-vm: the agent port's token and Host check for nginx, from the boot credential";
      requiredBy = [ "nginx.service" ];
      before = [ "nginx.service" ];
      path = [ pkgs.coreutils ];
      serviceConfig = {
        Type = "oneshot";
        RemainAfterExit = true;
        ImportCredential = [ credentials.agentToken ];
      };
      script = ''
        install -d -m 0750 -o root -g ${nginxGroup} ${authDir}
        ${pkgs.runtimeShell} ${./agent/agent-auth-conf.sh} \
          "$CREDENTIALS_DIRECTORY/${credentials.agentToken}" ${authConf} ${nginxGroup}
      '';
    };

    systemd.services.agent-vm-agent = {
      description = "agent-vm agent service (mcp-proxy on 127.0.0.1:${toString cfg.backendPort})";
      wantedBy = [ "multi-user.target" ];
      after = [ "network.target" ];
      inherit (cfg) path;
      unitConfig.RequiresMountsFor = [ config.agent-vm.workspace.mountPoint ];
      serviceConfig = {
        User = cfg.user;
        Group = config.users.users.${cfg.user}.group;
        WorkingDirectory = config.agent-vm.workspace.mountPoint;
        # The VM's MCP secrets (NAME=value lines from the host), readable by
        # this unit's user only, loaded into the servers' environment
        # without being evaluated as shell (agent/with-env-file.sh).
        ImportCredential = [ credentials.mcpSecrets ];
        # %d: the unit's credentials directory (escapeSystemdExecArgs would
        # escape the specifier, so it stands outside).
        ExecStart = lib.concatStringsSep " " [
          (utils.escapeSystemdExecArgs [
            pkgs.runtimeShell
            "${./agent/with-env-file.sh}"
          ])
          "%d/${credentials.mcpSecrets}"
          (utils.escapeSystemdExecArgs (
            [ (lib.getExe cfg.package) ]
            ++ agentLib.mcpProxyArgs {
              inherit (cfg) extraArgs;
              port = cfg.backendPort;
              inherit configFile;
            }
          ))
        ];
        # "-": optional. A missing file would fail the unit, and `agent-vm
        # up` would wait its whole timeout for an agent that never starts.
        EnvironmentFile = mkIf (cfg.environmentFile != null) "-${cfg.environmentFile}";
        Restart = "on-failure";
        RestartSec = 2;
        NoNewPrivileges = true;
      };
    };
  };
}
