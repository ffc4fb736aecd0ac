# Reading and checking the parameters file the CLI writes (see
# docs/contract.md). The Python model `agent_vm.models.VmParams` is the
# source of truth; this file only refuses what Nix cannot use, with a
# message that names the field, so a bad file fails at evaluation and not
# inside a half-started VM. The CLI is not the only writer (a hand-made
# file, a future tool), so everything that ends up on the QEMU command line
# is checked here again.
{ }:
let
  isPort = p: builtins.isInt p && p >= 1 && p <= 65535;
  isId = i: builtins.isInt i && i >= 1 && i <= 4294967294;

  # An IPv4 literal. An empty address would make QEMU forward on every
  # interface, and a comma would smuggle in another option.
  isIPv4 =
    a:
    let
      m = if builtins.isString a then builtins.match "([0-9]{1,3})\\.([0-9]{1,3})\\.([0-9]{1,3})\\.([0-9]{1,3})" a else null;
    in
    m != null && builtins.all (o: builtins.fromJSON o <= 255) m;

  isAbsolute = s: builtins.isString s && builtins.substring 0 1 s == "/";

  requiredKeys = [
    "version"
    "name"
    "stateDir"
    "hostAddress"
    "sshPort"
    "agentPort"
    "guestAgentPort"
    "memoryMiB"
    "cores"
    "diskSizeMiB"
    "network"
    "share"
    "workspace"
    "user"
  ];

  # Each check: a condition on the (complete) parameters and the message
  # when it fails. Checked in order; the first failure is reported.
  checks = p: [
    {
      ok = p.version == supportedVersion;
      msg = "unsupported version ${builtins.toJSON p.version}";
    }
    {
      ok = builtins.isString p.name && builtins.match "[a-z0-9][a-z0-9-]{0,62}" p.name != null;
      msg = "invalid name '${toString p.name}'";
    }
    {
      ok = isAbsolute p.stateDir;
      msg = "stateDir must be absolute";
    }
    {
      ok = isIPv4 p.hostAddress;
      msg = "hostAddress must be an IPv4 address, not ${builtins.toJSON p.hostAddress}";
    }
    {
      ok = isPort p.sshPort && isPort p.agentPort && isPort p.guestAgentPort;
      msg = "ports must be 1-65535";
    }
    {
      ok = p.sshPort != p.agentPort;
      msg = "sshPort and agentPort must differ";
    }
    {
      ok = builtins.elem p.network [
        "open"
        "none"
        "allow"
      ];
      msg = "network must be \"open\", \"none\" or \"allow\"";
    }
    {
      ok = builtins.elem p.share [
        "9p"
        "virtiofs"
      ];
      msg = "share must be \"9p\" or \"virtiofs\"";
    }
    {
      # Optional: files from before the setting mean "share".
      ok = builtins.elem (p.workspaceMode or "share") [
        "share"
        "disk"
      ];
      msg = "workspaceMode must be \"share\" or \"disk\"";
    }
    {
      ok = builtins.isInt p.memoryMiB && p.memoryMiB >= 128 && builtins.isInt p.cores && p.cores >= 1;
      msg = "memoryMiB >= 128 and cores >= 1 required";
    }
    {
      ok = builtins.isInt p.diskSizeMiB && p.diskSizeMiB >= 64;
      msg = "diskSizeMiB >= 64 required";
    }
    {
      ok = isAbsolute (p.workspace.hostPath or null) && isAbsolute (p.workspace.mountPoint or "/workspace");
      msg = "workspace.hostPath and workspace.mountPoint must be absolute";
    }
    {
      # The tag names a QEMU device and a virtiofsd socket; nix-store is the
      # host store's share.
      ok =
        builtins.isString (p.workspace.tag or null)
        && builtins.match "[a-z0-9][a-z0-9-]{0,30}" p.workspace.tag != null
        && p.workspace.tag != "nix-store";
      msg = "workspace.tag must be [a-z0-9-] (at most 31), not \"nix-store\"";
    }
    {
      ok = builtins.elem (p.workspace.securityModel or "none") [
        "none"
        "mapped-xattr"
      ];
      msg = "workspace.securityModel must be \"none\" or \"mapped-xattr\"";
    }
    {
      ok =
        builtins.isString (p.user.name or null)
        && builtins.match "[a-z_][a-z0-9_-]{0,31}" p.user.name != null
        && isId (p.user.uid or null)
        && isId (p.user.gid or null);
      msg = "user needs a name ([a-z_][a-z0-9_-]*) and uid/gid in 1-4294967294";
    }
  ];

  missing = p: builtins.filter (k: !(p ? ${k})) requiredKeys;

  supportedVersion = 2;
in
rec {
  /**
    The only parameters version this library understands.
  */
  inherit supportedVersion;

  /**
    Validate a parameters attrset and return it unchanged; throw
    `agent-vm params: <what is wrong>` otherwise.

    Type: validateParams :: attrset -> attrset
  */
  validateParams =
    p:
    let
      m = missing p;
      failed = builtins.filter (c: !c.ok) (checks p);
    in
    if m != [ ] then
      throw "agent-vm params: missing keys: ${builtins.concatStringsSep ", " m}"
    else if failed != [ ] then
      throw "agent-vm params: ${(builtins.head failed).msg}"
    else
      p;

  /**
    Read the JSON parameters file at `path` and validate it.

    Type: readParams :: (path | string) -> attrset
  */
  readParams = path: validateParams (builtins.fromJSON (builtins.readFile path));
}
