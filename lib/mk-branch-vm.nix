# From a parameters file (what the CLI writes) to a branch VM's runner:
# evaluates the NixOS guest (modules/guest.nix, the user's --config module)
# and hands its kernel, initrd, store image and command line to the pure
# runner library. The one part of lib/ that needs nixpkgs; flake.nix passes
# it in.
{
  nixpkgs,
  guestModule,
  runnerLib ? import ./. { },
  # system -> the egress proxy program (the agent-vm package's
  # agent-vm-egress), for VMs with network = "allow".
  egressEngine ? system: throw "agent-vm: mkBranchVM needs egressEngine for network = \"allow\"",
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

  # What the CLI sets in the guest. The user's ids, the share type, the
  # workspace mode and the share's tag must match what the runner gives QEMU, so their options are internal
  # and a --config module that sets one fails with a conflict naming this
  # file. The mount point is the user's to change: a default.
  settings = runnerLib.guestSettings valid;
  cliSettings = {
    _file = "agent-vm's parameters file (lib/mk-branch-vm.nix)";
    nixpkgs.hostPlatform = system;
    agent-vm = {
      inherit (settings) user;
      workspace = {
        inherit (settings.workspace) share mode tag;
        mountPoint = nixpkgs.lib.mkDefault settings.workspace.mountPoint;
      };
    };
  };

  nixos = nixpkgs.lib.nixosSystem {
    modules = [
      guestModule
      cliSettings
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
      };
      rootFormat = "ext4";
    };
    hostSystem = system;
    qemu = "${pkgs.qemu_kvm}/bin/${runnerLib.qemuBinary system}";
    qemuImg = "${pkgs.qemu_kvm}/bin/qemu-img";
    mkfsExt4 = "${pkgs.e2fsprogs}/bin/mkfs.ext4";
    virtiofsd = "${pkgs.virtiofsd}/bin/virtiofsd";
    egress = {
      relay = "${pkgs.socat}/bin/socat";
      engine = egressEngine system;
    };
    shell = pkgs.runtimeShell;
    inherit (pkgs) writeScriptBin;
  };
in
runner // { inherit nixos; }
