# The flake's checks (`nix flake check`). The VM tests need a machine with
# KVM (nested virtualisation for the full tier); the light tier's TCG
# variant and the Python/Nix test layers run anywhere.
{
  pkgs,
  self,
  nixpkgs,
}:
let
  common = import ./common.nix { inherit pkgs self nixpkgs; };
in
{
  # Light tier: the runner in the build sandbox.
  startup-shutdown = import ./startup-shutdown.nix {
    inherit pkgs self;
    accel = "kvm";
  };
  startup-shutdown-tcg = import ./startup-shutdown.nix {
    inherit pkgs self;
    accel = "tcg";
  };

  # Full tier: NixOS test machines running branch VMs.
  cli = import ./cli.nix { inherit pkgs self common; };
  host-module = import ./host-module.nix { inherit pkgs self common; };

  # The repository's unit and Nix-evaluation tests (the end-to-end layer
  # needs a Debian guest and root, which a build sandbox has not: ./run-tests
  # runs it).
  python-tests = import ./python-tests.nix { inherit pkgs self; };
}
