# The one function of nixpkgs' nixos/lib/utils.nix that agent-vm's modules
# use, with the same behaviour: each argument JSON-quoted (systemd's
# ExecStart accepts C-style double quotes), with `%` and `$` doubled so
# systemd expands no specifier or variable.
{ lib }:
{
  escapeSystemdExecArgs = lib.concatMapStringsSep " " (
    arg:
    let
      s =
        if builtins.isPath arg then
          "${arg}"
        else if builtins.isString arg then
          arg
        else if builtins.isInt arg || lib.isDerivation arg then
          toString arg
        else
          throw "escapeSystemdExecArgs: cannot escape ${builtins.typeOf arg}";
    in
    builtins.replaceStrings [ "%" "$" ] [ "%%" "$$" ] (builtins.toJSON s)
  );
}
