# The agent service's MCP proxy: its configuration file and command line.
# Pure, so both are evaluated and asserted without nixpkgs.
{ }:
{
  /**
    mcp-proxy's `--named-server-config` document for the declared servers.
    Disabled servers are left out (mcp-proxy refuses a server it cannot
    start, and would not start at all).

    Type: mcpProxyConfig :: attrsOf { enable, command, args, env } -> attrset

    Example: mcpProxyConfig { fs = { enable = true; command = "/bin/fs"; args = [ ]; env = { }; }; }
      => { mcpServers = { fs = { command = "/bin/fs"; args = [ ]; env = { }; }; }; }
  */
  mcpProxyConfig = servers: {
    mcpServers = builtins.mapAttrs (_: s: {
      inherit (s) command args env;
    }) (builtins.removeAttrs servers (builtins.filter (n: !servers.${n}.enable) (builtins.attrNames servers)));
  };

  /**
    mcp-proxy's arguments: listen on every guest interface (the guest
    firewall and QEMU's host forward decide who reaches it) on `port`.

    Type: mcpProxyArgs :: { port, configFile, passEnvironment ? true, extraArgs ? [ ] } -> [string]
  */
  mcpProxyArgs =
    {
      port,
      configFile,
      passEnvironment ? true,
      extraArgs ? [ ],
    }:
    [
      "--host"
      "0.0.0.0"
      "--port"
      (toString port)
      "--named-server-config"
      (toString configFile)
    ]
    ++ (if passEnvironment then [ "--pass-environment" ] else [ "--no-pass-environment" ])
    ++ extraArgs;

  /**
    The HTTP path the CLI's readiness and `status` probe: mcp-proxy answers
    it with 200 and JSON once every server has started.
  */
  healthPath = "/status";
}
