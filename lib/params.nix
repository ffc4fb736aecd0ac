# Reading and checking the parameters file the CLI writes (see
# docs/contract.md). The Python model `agent_vm.models.VmParams` is the
# source of truth; this file only refuses what Nix cannot use, with a
# message that names the field, so a bad file fails at evaluation and not
# inside a half-started VM.
{ }:
let
  isPort = p: builtins.isInt p && p >= 1 && p <= 65535;
  check =
    cond: msg: value:
    if cond then value else throw "agent-vm params: ${msg}";
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
    "sshAuthorizedKeys"
  ];
  missing = p: builtins.filter (k: !(p ? ${k})) requiredKeys;
in
rec {
  /**
    The only parameters version this library understands.
  */
  supportedVersion = 1;

  /**
    Validate a parameters attrset and return it unchanged.

    Type: validateParams :: attrset -> attrset
  */
  validateParams =
    p:
    let
      m = missing p;
    in
    check (m == [ ]) "missing keys: ${builtins.concatStringsSep ", " m}" (
      check (p.version == supportedVersion) "unsupported version ${toString p.version}" (
        check (builtins.match "[a-z0-9][a-z0-9-]{0,62}" p.name != null) "invalid name '${p.name}'" (
          check (builtins.substring 0 1 p.stateDir == "/") "stateDir must be absolute" (
            check (isPort p.sshPort && isPort p.agentPort && isPort p.guestAgentPort) "ports must be 1-65535" (
              check (p.sshPort != p.agentPort) "sshPort and agentPort must differ" (
                check (builtins.elem p.network [
                  "open"
                  "none"
                ]) "network must be \"open\" or \"none\"" (
                  check (builtins.elem p.share [
                    "9p"
                    "virtiofs"
                  ]) "share must be \"9p\" or \"virtiofs\"" (
                    check (
                      builtins.isInt p.memoryMiB && p.memoryMiB >= 128 && builtins.isInt p.cores && p.cores >= 1
                    ) "memoryMiB >= 128 and cores >= 1 required" p
                  )
                )
              )
            )
          )
        )
      )
    );

  /**
    Read the JSON parameters file at `path` and validate it.

    Type: readParams :: path -> attrset
  */
  readParams = path: validateParams (builtins.fromJSON (builtins.readFile path));
}
