# The end-to-end tests' flake: the same attribute the CLI builds from the
# real flake (legacyPackages.<system>.agent-vm-runner), made by the project's
# own lib/ (copied beside this file by the test fixture), with the NixOS
# closure replaced by a Debian guest built by tests/e2e/guest/build-guest.sh.
# No nixpkgs: this machine has none, so writeScriptBin is builtins-only and
# relies on Debian's nix running builds without a sandbox.
{
  description = "agent-vm end-to-end test runner (Debian stand-in guest)";

  outputs =
    { self }:
    let
      lib = import ./lib { };
      system = "x86_64-linux";
      env =
        name: default:
        let
          v = builtins.getEnv name;
        in
        if v == "" then default else v;
      params = lib.readParams (env "AGENT_VM_PARAMS" (throw "AGENT_VM_PARAMS is not set"));
      guestDir = env "AGENT_VM_TEST_GUEST" (throw "AGENT_VM_TEST_GUEST is not set");
      writeScriptBin =
        name: text:
        derivation {
          inherit name system text;
          builder = "/bin/sh";
          passAsFile = [ "text" ];
          PATH = "/usr/bin:/bin";
          args = [
            "-c"
            "mkdir -p $out/bin && cp \"$textPath\" $out/bin/${name} && chmod 0555 $out/bin/${name}"
          ];
        };
    in
    {
      legacyPackages.${system}.agent-vm-runner = lib.mkRunner {
        inherit params writeScriptBin;
        hostSystem = system;
        guest = {
          kernel = "${guestDir}/vmlinuz";
          initrd = "${guestDir}/initrd.img";
          cmdline = builtins.concatStringsSep " " [
            "root=/dev/vda rw"
            "agent_vm.user=${params.user.name}"
            "agent_vm.uid=${toString params.user.uid}"
            "agent_vm.gid=${toString params.user.gid}"
            "agent_vm.agent_port=${toString params.guestAgentPort}"
            "agent_vm.workspace=${params.workspaceMode or "share"}"
            (env "AGENT_VM_TEST_CMDLINE" "")
          ];
          diskBackingFile = "${guestDir}/rootfs.raw";
        };
        egress = {
          relay = env "AGENT_VM_TEST_RELAY" "/usr/bin/socat";
          engine = env "AGENT_VM_TEST_EGRESS_ENGINE" (throw "AGENT_VM_TEST_EGRESS_ENGINE is not set");
        };
        qemu = env "AGENT_VM_TEST_QEMU" "/usr/bin/qemu-system-x86_64";
        qemuImg = env "AGENT_VM_TEST_QEMU_IMG" "/usr/bin/qemu-img";
        shell = "/bin/sh";
      };
    };
}
