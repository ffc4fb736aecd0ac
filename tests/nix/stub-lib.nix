# A stand-in for nixpkgs' lib that is enough to evaluate a NixOS module's
# `options` (never its `config`): mkOption and its kin return what they were
# given, tagged, so tests can walk the option tree and check that every
# option declares a type, a description and an example or default.
{ }:
let
  type =
    name: extra:
    {
      _type = "stub-type";
      inherit name;
    }
    // extra;
  types = {
    str = type "str" { };
    bool = type "bool" { };
    port = type "port" { };
    path = type "path" { };
    package = type "package" { };
    lines = type "lines" { };
    strMatching = re: type "strMatching" { inherit re; };
    enum = values: type "enum" { inherit values; };
    listOf = t: type "listOf" { elem = t; };
    attrsOf = t: type "attrsOf" { elem = t; };
    nullOr = t: type "nullOr" { elem = t; };
    submodule =
      m:
      type "submodule" {
        options = (if builtins.isFunction m then m { name = "<name>"; } else m).options;
      };
    ints = {
      between = lo: hi: type "ints.between" { inherit lo hi; };
      positive = type "ints.positive" { };
    };
  };
in
{
  inherit types;
  mkOption = attrs: attrs // { _type = "option"; };
  mkEnableOption = name: {
    _type = "option";
    type = types.bool;
    default = false;
    example = true;
    description = "Whether to enable ${name}.";
  };
  mkPackageOption = pkgs: name: extra: {
    _type = "option";
    type = types.package;
    description = "The ${name} package to use.";
    defaultText = "pkgs.${name}";
  };
  literalExpression = text: {
    _type = "literalExpression";
    inherit text;
  };
  literalMD = text: {
    _type = "literalMD";
    inherit text;
  };
}
