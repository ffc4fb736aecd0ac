# From a parameters file (what the CLI writes) to a branch VM's runner:
# evaluates the NixOS guest (modules/guest.nix, the user's --config module)
# and hands its kernel, initrd, store image and command line to the pure
# runner library. The one part of lib/ that needs nixpkgs; flake.nix passes
# it in.
{
  nixpkgs,
  guestModule,
  runnerLib ? import ./. { },
}:
/**
  The runner derivation (`bin/run-agent-vm`) of one branch VM.

  Type: mkBranchVM :: { system, params, modules ? [ ] } -> derivation

  `params` is the parsed parameters file (see `readParams`); its
  `userModule`, when set, is imported as a NixOS module (an absolute path:
  evaluate with --impure). `modules` are added after it (tests use this).
  The result also carries `nixos`, the evaluated guest system.

  Example: mkBranchVM { system = "x86_64-linux"; params = lib.readParams ./params.json; }
*/
{
  system,
  params,
  modules ? [ ],
}:
let
  pkgs = nixpkgs.legacyPackages.${system};
  valid = runnerLib.validateParams params;
  userModule = valid.userModule or null;

  nixos = nixpkgs.lib.nixosSystem {
    modules = [
      guestModule
      {
        nixpkgs.hostPlatform = system;
        agent-vm = runnerLib.guestSettings valid;
      }
    ]
    ++ (if userModule == null then [ ] else [ (/. + userModule) ])
    ++ modules;
  };
  guest = nixos.config.system.build.agentVm;

  runner = runnerLib.mkRunner {
    # The guest configuration, not the CLI, knows the agent's port inside.
    params = valid // {
      guestAgentPort = guest.agentPort;
    };
    guest = {
      inherit (guest) kernel initrd storeImage hostStore;
      cmdline = runnerLib.kernelCmdline {
        inherit (guest) toplevel kernelParams regInfo;
        hostname = valid.name;
      };
      rootFormat = "ext4";
    };
    hostSystem = system;
    qemu = "${pkgs.qemu_kvm}/bin/${runnerLib.qemuBinary system}";
    qemuImg = "${pkgs.qemu_kvm}/bin/qemu-img";
    mkfsExt4 = "${pkgs.e2fsprogs}/bin/mkfs.ext4";
    virtiofsd = "${pkgs.virtiofsd}/bin/virtiofsd";
    shell = pkgs.runtimeShell;
    inherit (pkgs) writeScriptBin;
  };
in
runner // { inherit nixos; }
