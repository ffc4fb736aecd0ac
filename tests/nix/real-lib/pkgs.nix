# A package set of stand-ins: every attribute agent-vm's Nix code takes
# from pkgs, as a derivation-shaped attribute set (type, name, outPath,
# meta.mainProgram) under a fake store path. Nothing is built: the harness
# evaluates, and checks what the modules make of these values.
{ lib }:
let
  drv =
    name: extra:
    let
      self = {
        type = "derivation";
        inherit name;
        pname = name;
        outPath = "/nix/store/00000000000000000000000000000000-${name}";
        drvPath = "/nix/store/00000000000000000000000000000000-${name}.drv";
        outputName = "out";
        meta.mainProgram = name;
        out = self;
      }
      // extra;
    in
    self;
in
{
  stdenv.hostPlatform.system = "x86_64-linux";
  runtimeShell = "/nix/store/00000000000000000000000000000000-bash/bin/bash";

  closureInfo = { rootPaths }: drv "closure-info" { inherit rootPaths; };
  runCommand = name: env: script: drv name { inherit env script; };
  writeText = name: text: drv name { inherit text; };
  writeScriptBin = name: text: drv name { inherit text; };
  writers.writePython3Bin =
    name: args: text:
    drv name { inherit args text; };
  python3Packages.mcp = drv "python3.13-mcp" { };

  erofs-utils = drv "erofs-utils" { meta.mainProgram = "mkfs.erofs"; };
  mcp-proxy = drv "mcp-proxy" { };
  git = drv "git" { };
  nodejs = drv "nodejs" { meta.mainProgram = "node"; };
  nix = drv "nix" { };
  qemu_kvm = drv "qemu" { };
  e2fsprogs = drv "e2fsprogs" { };
  virtiofsd = drv "virtiofsd" { };
  agent-vm = drv "agent-vm" { };
  cacert = drv "nss-cacert" { p11kit = drv "nss-cacert-p11kit" { }; };
  coreutils = drv "coreutils" { };
  socat = drv "socat" { };
  nginxStable = drv "nginx" { };
}
