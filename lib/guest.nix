# What a NixOS guest is given, computed from the parameters file. Pure, so
# it is evaluated and asserted without nixpkgs.
#
# Only values that are the same for all of a host user's VMs reach the
# guest's NixOS configuration (the user's ids, how the workspace is shared):
# every branch VM of that user then has the same system closure and store
# image, built once. What differs per VM (name, ports, keys) travels at boot:
# on the kernel command line or as fw_cfg credentials.
{ }:
{
  /**
    The `agent-vm` module settings for the guest of these parameters.

    Type: guestSettings :: attrset -> attrset

    Example: (guestSettings params).user => { name = "dev"; uid = 1000; gid = 1000; }
  */
  guestSettings = params: {
    user = {
      inherit (params.user) name uid gid;
    };
    workspace = {
      inherit (params) share;
      mode = params.workspaceMode or "share";
      inherit (params.workspace) tag;
      mountPoint = params.workspace.mountPoint or "/workspace";
    };
  };

  /**
    The kernel command line of a NixOS guest booted directly (no boot
    loader): the system's `init`, its kernel parameters, where the store
    registration is (loaded into the guest's Nix database at boot). The
    runner adds what is per VM (`vmKernelParams`).

    Type: kernelCmdline :: { toplevel, kernelParams, regInfo ? null } -> string
  */
  kernelCmdline =
    {
      toplevel,
      kernelParams,
      regInfo ? null,
    }:
    builtins.concatStringsSep " " (
      [ "init=${toplevel}/init" ]
      ++ kernelParams
      ++ (if regInfo == null then [ ] else [ "regInfo=${regInfo}/registration" ])
    );

  /**
    The QEMU system emulator's program name for a Nix system.

    Type: qemuBinary :: string -> string

    Example: qemuBinary "aarch64-linux" => "qemu-system-aarch64"
  */
  qemuBinary =
    system:
    {
      x86_64-linux = "qemu-system-x86_64";
      aarch64-linux = "qemu-system-aarch64";
    }
    .${system} or (throw "agent-vm: unsupported system ${system}");
}
