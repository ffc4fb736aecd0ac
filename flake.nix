{
  description = "agent-vm: per-branch, hardware-isolated NixOS VMs for AI coding agents";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-25.11";

  outputs =
    { self, nixpkgs }:
    let
      systems = [
        "x86_64-linux"
        "aarch64-linux"
      ];
      forAllSystems = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});

      runnerLib = import ./lib { };

      # What the CLI builds (docs/contract.md): the runner of the VM whose
      # parameters file $AGENT_VM_PARAMS names. Needs --impure.
      branchRunner =
        system:
        let
          file = builtins.getEnv "AGENT_VM_PARAMS";
        in
        if file == "" then
          throw "agent-vm-runner is built by the agent-vm CLI, which sets AGENT_VM_PARAMS (and passes --impure)"
        else
          self.lib.mkBranchVM {
            inherit system;
            params = runnerLib.readParams file;
          };
    in
    {
      lib = runnerLib // {
        mkBranchVM = import ./lib/mk-branch-vm.nix {
          inherit nixpkgs runnerLib;
          guestModule = self.nixosModules.guest;
          egressEngine = system: nixpkgs.lib.getExe' self.packages.${system}.agent-vm "agent-vm-egress";
        };
      };

      nixosModules = {
        guest = ./modules/guest.nix;
        host =
          { lib, pkgs, ... }:
          {
            imports = [ ./modules/host.nix ];
            programs.agent-vm.package = lib.mkDefault self.packages.${pkgs.stdenv.hostPlatform.system}.agent-vm;
          };
        default = self.nixosModules.host;
      };

      packages = forAllSystems (pkgs: {
        agent-vm = pkgs.callPackage ./python/package.nix {
          flakeSource = self;
          flakeInputs = [ nixpkgs ];
        };
        default = self.packages.${pkgs.stdenv.hostPlatform.system}.agent-vm;
      });

      apps = forAllSystems (
        pkgs:
        let
          app = {
            type = "app";
            program = nixpkgs.lib.getExe self.packages.${pkgs.stdenv.hostPlatform.system}.agent-vm;
            meta.description = "agent-vm: a NixOS VM for the current git branch";
          };
        in
        {
          agent-vm = app;
          default = app;
        }
      );

      # legacyPackages, not packages: the attribute needs the environment
      # variable, and `nix flake check` does not evaluate legacyPackages.
      legacyPackages = forAllSystems (pkgs: {
        agent-vm-runner = branchRunner pkgs.stdenv.hostPlatform.system;
      });

      devShells = forAllSystems (pkgs: {
        default = pkgs.mkShell {
          packages = [
            (import ./python/test-env.nix pkgs.python3)
            pkgs.ruff
            pkgs.nix
            pkgs.qemu_kvm
            pkgs.openssh
            pkgs.git
            pkgs.e2fsprogs
            pkgs.virtiofsd
            pkgs.mcp-proxy
            pkgs.nixfmt
          ];
        };
      });

      formatter = forAllSystems (pkgs: pkgs.nixfmt-tree);

      checks = forAllSystems (
        pkgs:
        import ./nixos-tests {
          inherit pkgs self nixpkgs;
        }
      );
    };
}
