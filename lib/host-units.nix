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
    sshPort, agentPort, memory, cores, diskSize, network, ephemeral,
    config }` (`config` a path or null).
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
    ]
    ++ (
      if vm.config == null then
        [ ]
      else
        [
          "--config"
          (toString vm.config)
        ]
    );
}
