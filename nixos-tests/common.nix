# What the full NixOS tests share: a test machine (L1) that runs branch VMs
# (L2) with the real CLI, offline.
#
# The test machine has no network, so `agent-vm start`'s `nix build` must
# find everything in its store already: the flake's own source and its
# nixpkgs input (evaluated there), the guest systems the CLI will ask for
# (built here, for the users the tests run VMs as), and stdenvNoCC (to write
# the runner script, the one thing built inside). A guest depends only on
# its user's ids and the share type (lib/guest.nix), so it can be prebuilt.
{
  pkgs,
  self,
  nixpkgs,
}:
let
  inherit (pkgs) lib;
  system = pkgs.stdenv.hostPlatform.system;

  # The guest the CLI will build for a user: parameters as the CLI writes
  # them; only the ids and the share type shape the guest system.
  guestFor =
    { uid, gid }:
    (self.lib.mkBranchVM {
      inherit system;
      params = import ./params.nix {
        name = "prebuilt";
        stateDir = "/prebuilt";
        user = { inherit uid gid; };
        # The CLI picks virtiofs: the package puts virtiofsd on PATH.
        share = "virtiofs";
      };
    }).nixos.config.system.build.agentVm;
in
{
  /**
    The test machine's configuration. `guests` lists the `{ uid, gid }` of
    the host users whose VMs the test starts.
  */
  machine =
    { guests }:
    { config, ... }:
    {
      imports = [ self.nixosModules.host ];
      programs.agent-vm.enable = true;

      # Nested virtualisation: `-cpu max` passes VMX/SVM through where the
      # build machine allows it (udev then loads kvm-intel or kvm-amd), and
      # still works under TCG, unlike `-cpu host`. Without nesting the
      # runner falls back to TCG (slower, still correct: the timeouts are
      # generous).
      virtualisation.qemu.options = [ "-cpu max" ];
      virtualisation = {
        memorySize = 6144;
        cores = 2;
        diskSize = 8192;
        additionalPaths = [
          nixpkgs.outPath
          self.outPath
          pkgs.stdenvNoCC
          # What a --network allow runner (the default) names: its relay.
          # The engine is the agent-vm package, installed anyway.
          pkgs.socat
        ]
        # Everything of a guest the runner and the CLI's build use: the boot
        # files, the store image, and the system and its registration, which
        # the kernel command line names (the image's own references are not
        # to be relied on: a compressed image would have none).
        ++ lib.concatMap (
          ids:
          let
            g = guestFor ids;
          in
          lib.filter (p: p != null) [
            g.kernel
            g.initrd
            g.toplevel
            g.regInfo
            g.storeImage
          ]
        ) guests;
      };

      nix.settings = {
        substituters = lib.mkForce [ ];
        flake-registry = "";
        experimental-features = [
          "nix-command"
          "flakes"
        ];
      };
      environment.systemPackages = [
        pkgs.curl
        pkgs.git
        pkgs.jq
      ];
      networking.firewall.enable = false;
      system.stateVersion = config.system.nixos.release;
    };
}
