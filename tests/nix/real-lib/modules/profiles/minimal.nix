# Stands in for nixpkgs' nixos/modules/profiles/minimal.nix, which sets
# only options of NixOS modules this harness does not evaluate
# (documentation, fonts, …).
{ }
