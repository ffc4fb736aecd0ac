# The agent service: nixpkgs' mcp-proxy, serving the declared MCP servers
# over HTTP (SSE and streamable HTTP) on the agent port, as the guest user,
# in the workspace. The CLI's readiness check and `status` read mcp-proxy's
# GET /status (200 once every server has started).
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
          put secrets in {option}`agent-vm.agent.environmentFile` instead.
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
        Whether to run the agent service (mcp-proxy on
        {option}`agent-vm.agent.port`). Without it, `agent-vm start`
        still waits for the port to answer: disable it only for a guest
        whose own service answers there.
      '';
    };

    package = lib.mkPackageOption pkgs "mcp-proxy" { };

    port = mkOption {
      type = types.port;
      default = 8000;
      example = 3000;
      description = ''
        The port mcp-proxy listens on inside the guest. The runner forwards
        the VM's agent port on the host to it.
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
      type = types.nullOr types.str;
      default = null;
      example = "/run/secrets/agent-vm-mcp.env";
      description = ''
        A file of `NAME=value` lines read when the service starts (systemd's
        `EnvironmentFile=`) and passed on to every server: the place for
        API tokens. It is read inside the guest at run time and never
        enters the Nix store; a path under /workspace works. When it does
        not exist the service starts without it.
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
        assertion = enabledServers != { };
        message = ''
          agent-vm.agent: mcp-proxy needs at least one enabled server in
          agent-vm.agent.servers (or set agent-vm.agent.enable = false).
        '';
      }
    ];

    networking.firewall.allowedTCPPorts = [ cfg.port ];

    systemd.services.agent-vm-agent = {
      description = "agent-vm agent service (mcp-proxy on port ${toString cfg.port})";
      wantedBy = [ "multi-user.target" ];
      after = [ "network.target" ];
      inherit (cfg) path;
      unitConfig.RequiresMountsFor = [ config.agent-vm.workspace.mountPoint ];
      serviceConfig = {
        User = config.agent-vm.user.name;
        Group = config.agent-vm.user.group;
        WorkingDirectory = config.agent-vm.workspace.mountPoint;
        ExecStart = utils.escapeSystemdExecArgs (
          [ (lib.getExe cfg.package) ]
          ++ agentLib.mcpProxyArgs {
            inherit (cfg) port extraArgs;
            inherit configFile;
          }
        );
        # "-": optional. A missing file (an env file under /workspace is not
        # in a fresh branch's clone) would fail the unit, and `agent-vm up`
        # would wait its whole timeout for an agent that never starts.
        EnvironmentFile = mkIf (cfg.environmentFile != null) "-${cfg.environmentFile}";
        Restart = "on-failure";
        RestartSec = 2;
        NoNewPrivileges = true;
      };
    };
  };
}
