# agent-vm's runner library. Builtins only (nixpkgs is passed in where a
# derivation is made), so everything that computes the QEMU command line
# and the runner script evaluates with plain `nix-instantiate --eval`.
#
#   lib = import ./lib { };
#   lib.mkRunner { params = lib.readParams ./params.json; guest = …; … }
{ }:
let
  strings = import ./strings.nix { };
  params = import ./params.nix { };
  egress = import ./egress.nix { inherit strings; };
  agent = import ./agent.nix { };
  qemuArgs = import ./qemu-args.nix { inherit strings egress agent; };
  runner = import ./runner-script.nix { inherit strings qemuArgs egress; };
  guest = import ./guest.nix { };
  hostUnits = import ./host-units.nix { };
in
{
  inherit (strings)
    escapeShellArg
    escapeShellArgs
    escapeQemuOpt
    qemuOpts
    ;
  inherit (params) readParams validateParams supportedVersion;
  inherit (qemuArgs)
    qemuArgs
    kvmProbeArgs
    statePaths
    forwards
    shares
    credentials
    guestAgentChannel
    workspaceMode
    ;
  inherit (runner) runnerScript;
  egress = {
    inherit (egress)
      guestAddress
      guestPort
      credentials
      socket
      files
      ;
  };
  inherit (guest) guestSettings kernelCmdline qemuBinary;
  inherit (agent)
    mcpProxyConfig
    mcpProxyArgs
    healthPath
    agentHosts
    vmKernelParams
    ;
  inherit (hostUnits) upArgs portClashes;

  /**
    The runner derivation: `bin/run-agent-vm` for one branch VM.

    Type: mkRunner :: attrset -> derivation

    Takes the arguments of `runnerScript` plus `writeScriptBin`
    (`name: text: derivation`, e.g. nixpkgs' `pkgs.writeScriptBin`).
  */
  mkRunner =
    args@{ writeScriptBin, ... }:
    writeScriptBin "run-agent-vm" (runner.runnerScript (builtins.removeAttrs args [ "writeScriptBin" ]));
}
