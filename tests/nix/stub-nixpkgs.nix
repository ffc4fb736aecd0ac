# Just enough of a nixpkgs flake for evaluating agent-vm's flake.nix here,
# where there is no nixpkgs: `lib.genAttrs`, `lib.mkDefault`, a `lib.nixosSystem` that
# records the modules it is given and answers with a fixed
# `system.build.agentVm`, and per-system package sets whose packages are
# /stub/… paths. Nothing is built.
{ }:
let
  genAttrs =
    names: f:
    builtins.listToAttrs (
      map (n: {
        name = n;
        value = f n;
      }) names
    );
  pkgsFor = system: {
    stdenv.hostPlatform.system = system;
    qemu_kvm = "/stub/qemu";
    e2fsprogs = "/stub/e2fsprogs";
    virtiofsd = "/stub/virtiofsd";
    socat = "/stub/socat";
    runtimeShell = "/stub/bash";
    writeScriptBin = name: text: {
      type = "derivation";
      inherit name text;
    };
    callPackage = path: args: {
      calledPackage = toString path;
      flakeInputs = map toString (args.flakeInputs or [ ]);
    };
  };
in
{
  outPath = "/stub/nixpkgs";
  lib = {
    inherit genAttrs;
    # nixpkgs' representation of a definition's priority (lib/modules.nix).
    mkDefault = content: {
      _type = "override";
      priority = 1000;
      inherit content;
    };
    getExe = drv: "${drv.calledPackage}/bin/agent-vm";
    getExe' = drv: name: "${drv.calledPackage}/bin/${name}";
    nixosSystem =
      { modules }:
      {
        modulesGiven = map (m: if builtins.isAttrs m then m else toString m) modules;
        config.system.build.agentVm = {
          kernel = "/stub/kernel/bzImage";
          initrd = "/stub/initrd/initrd";
          toplevel = "/stub/toplevel";
          kernelParams = [ "8250.nr_uarts=1" ];
          regInfo = "/stub/reginfo";
          storeImage = "/stub/store.erofs";
          hostStore = false;
          agentPort = 8123;
        };
      };
  };
  legacyPackages = genAttrs [
    "x86_64-linux"
    "aarch64-linux"
  ] pkgsFor;
}
