# The agent service's MCP proxy: its configuration file and command line.
# Pure, so both are evaluated and asserted without nixpkgs.
{ }:
rec {
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
    mcp-proxy's arguments: listen on `host`:`port`. In the guest that is
    loopback: the reverse proxy in front of it (nginx) is what the agent
    port reaches, and it checks the token and the Host header first.

    Type: mcpProxyArgs :: { port, configFile, host ? "127.0.0.1", passEnvironment ? true, extraArgs ? [ ] } -> [string]
  */
  mcpProxyArgs =
    {
      port,
      configFile,
      host ? "127.0.0.1",
      passEnvironment ? true,
      extraArgs ? [ ],
    }:
    [
      "--host"
      host
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

  /**
    The `Host` header values the guest's reverse proxy accepts on the agent
    port: the host-side address and port a client on the host connects to.
    Only these, so a web page that rebinds its own DNS name to 127.0.0.1
    (DNS rebinding) is refused: its requests carry that name. `localhost`
    and `127.0.0.1` always; the bound address too when it is another
    specific one (`--host 10.0.0.5`). Bound to every interface (0.0.0.0)
    there is no one address to name: clients elsewhere send
    `Host: 127.0.0.1:<port>` (or come through an SSH tunnel).

    Type: agentHosts :: { hostAddress, agentPort, ... } -> [string]

    Example: agentHosts { hostAddress = "127.0.0.1"; agentPort = 8000; }
      => [ "127.0.0.1:8000" "localhost:8000" ]
  */
  agentHosts =
    params:
    let
      port = toString params.agentPort;
      address = params.hostAddress;
    in
    [
      "127.0.0.1:${port}"
      "localhost:${port}"
    ]
    ++ (if address == "127.0.0.1" || address == "0.0.0.0" then [ ] else [ "${address}:${port}" ]);

  /**
    What the guest learns about itself on the kernel command line (per VM,
    so not in the guest's closure, and the same for every guest the runner
    boots): its hostname, the VM's name, and the agent port's accepted `Host`
    values. Nothing secret: any guest process can read /proc/cmdline. The
    token travels as a credential (`credentials.agentToken`).

    Type: vmKernelParams :: attrset -> [string]
  */
  vmKernelParams = params: [
    "systemd.hostname=${params.name}"
    "agent_vm.agent_hosts=${builtins.concatStringsSep "," (agentHosts params)}"
  ];
}
