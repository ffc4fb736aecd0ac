# The agent-vm CLI. Its wrapper puts what it runs on PATH (QEMU, ssh, git,
# nix, virtiofsd, e2fsprogs for a workspace disk) and points it at the flake it came from, so
# `agent-vm up` builds VMs from this flake without the user naming it.
{
  lib,
  python3Packages,
  qemu_kvm,
  openssh,
  git,
  nix,
  virtiofsd,
  e2fsprogs,
  flakeSource,
  flakeInputs ? [ ],
}:
python3Packages.buildPythonApplication {
  pname = "agent-vm";
  version = "0.1.0";
  pyproject = true;

  src = lib.fileset.toSource {
    root = ./.;
    fileset = lib.fileset.unions [
      ./pyproject.toml
      ./README.md
      ./agent_vm
    ];
  };

  build-system = [ python3Packages.setuptools ];
  dependencies = with python3Packages; [
    plumbum
    pydantic
    platformdirs
    argcomplete
    # The egress proxy's engine (bin/agent-vm-egress, which the runners of
    # network = "allow" VMs start). Imported only by that program.
    mitmproxy
  ];

  # The unit tests live in the repository's tests/ (flake check
  # `python-tests` runs them); here only the import.
  pythonImportsCheck = [ "agent_vm" ];

  makeWrapperArgs = [
    "--prefix"
    "PATH"
    ":"
    (lib.makeBinPath [
      qemu_kvm
      openssh
      git
      nix
      virtiofsd
      e2fsprogs
    ])
    "--set-default"
    "AGENT_VM_FLAKE"
    "path:${flakeSource}"
  ];

  # The flake's inputs (nixpkgs) in the runtime closure: evaluating the
  # flake then needs no download, also offline and at boot.
  postInstall = ''
    mkdir -p $out/share/agent-vm
    printf '%s\n' ${lib.escapeShellArgs (map toString flakeInputs)} > $out/share/agent-vm/flake-inputs
  '';

  meta = {
    description = "Per-branch, hardware-isolated NixOS VMs for AI coding agents";
    license = lib.licenses.mit;
    mainProgram = "agent-vm";
    platforms = lib.platforms.linux;
  };
}
