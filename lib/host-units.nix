# The command line a NixOS host's systemd unit runs for a declared VM
# (modules/host.nix). Pure, so it is evaluated here and fed to the CLI's own
# argument parser in the tests: the unit can only say what the CLI accepts.
{ }:
{
  /**
    `agent-vm … up --foreground …` arguments (without the program) for one
    declared VM. The ports are pinned: a declared port is a promise.

    Type: upArgs :: { stateDir, vm, timeout ? 300 } -> [string]

    `vm` is a `services.agent-vm.vms.<name>` value: `{ branch, hostAddress,
    sshPort, agentPort, memory, cores, diskSize, network, allow ? [ ],
    ephemeral, workspaceMode, config, mcpEnvironmentFile ? null }`
    (`config` a path or null; `mcpEnvironmentFile` a string, read by the
    CLI when the unit starts).
  */
  upArgs =
    {
      stateDir,
      vm,
      timeout ? 300,
    }:
    [
      "--state-dir"
      (toString stateDir)
      "--no-color"
      "--timeout"
      (toString timeout)
      "up"
      "--foreground"
      "--branch"
      vm.branch
      "--host"
      vm.hostAddress
      "--ssh-port"
      (toString vm.sshPort)
      "--port"
      (toString vm.agentPort)
      "--pin"
      "--memory"
      (toString vm.memory)
      "--cores"
      (toString vm.cores)
      "--disk-size"
      (toString vm.diskSize)
      "--network"
      vm.network
      (if vm.ephemeral then "--ephemeral" else "--no-ephemeral")
      "--workspace-mode"
      (vm.workspaceMode or "share")
    ]
    ++ (
      if vm.network != "allow" then
        [ ]
      else if (vm.allow or [ ]) == [ ] then
        # The exact list, even when empty (nothing allowed): no --allow at
        # all would mean "keep the VM's list".
        [
          "--allow-file"
          "/dev/null"
        ]
      else
        builtins.concatMap (p: [
          "--allow"
          p
        ]) vm.allow
    )
    ++ (
      if vm.config == null then
        [ ]
      else
        [
          "--config"
          (toString vm.config)
        ]
    )
    ++ (
      if vm.mcpEnvironmentFile or null == null then
        [ ]
      else
        [
          "--mcp-env"
          vm.mcpEnvironmentFile
        ]
    );

  /**
    The host ports of declared VMs that would clash when bound: the same
    port on the same address, or on any address when either is 0.0.0.0
    (which binds every address). One message per clashing pair.

    Type: portClashes :: attrsOf { hostAddress, sshPort, agentPort, ... } -> [string]

    Example: portClashes { a = { hostAddress = "0.0.0.0"; sshPort = 2222; agentPort = 8000; };
                           b = { hostAddress = "127.0.0.1"; sshPort = 2222; agentPort = 8001; }; }
      => [ "a's sshPort (0.0.0.0:2222) and b's sshPort (127.0.0.1:2222)" ]
  */
  portClashes =
    vms:
    let
      bindings = builtins.concatMap (
        name:
        map
          (what: {
            inherit name what;
            address = vms.${name}.hostAddress;
            port = vms.${name}.${what};
          })
          [
            "sshPort"
            "agentPort"
          ]
      ) (builtins.attrNames vms);
      n = builtins.length bindings;
      at = builtins.elemAt bindings;
      overlap =
        a: b:
        a.port == b.port
        && (a.address == b.address || a.address == "0.0.0.0" || b.address == "0.0.0.0");
      show = b: "${b.name}'s ${b.what} (${b.address}:${toString b.port})";
      pairs = builtins.concatLists (
        builtins.genList (i: builtins.genList (d: [ (at i) (at (i + d + 1)) ]) (n - i - 1)) n
      );
    in
    map (p: "${show (builtins.head p)} and ${show (builtins.elemAt p 1)}") (
      builtins.filter (p: overlap (builtins.head p) (builtins.elemAt p 1)) pairs
    );
}
