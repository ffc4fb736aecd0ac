# Quoting helpers for the runner library. Builtins only, so the runner's
# text can be evaluated and asserted with plain `nix-instantiate --eval`.
{ }:
rec {
  /**
    Quote a string for a POSIX shell: the result is one word whatever it
    contains (spaces, quotes, `$(...)`, newlines).

    Type: escapeShellArg :: string -> string

    Example: escapeShellArg "it's" => "'it'\\''s'"
  */
  escapeShellArg = s: "'" + builtins.replaceStrings [ "'" ] [ "'\\''" ] (toString s) + "'";

  /**
    Quote a list of words for a POSIX shell, space separated.

    Type: escapeShellArgs :: [string] -> string
  */
  escapeShellArgs = args: builtins.concatStringsSep " " (map escapeShellArg args);

  /**
    Escape a value inside a QEMU `-opt key=value,key=value` list: QEMU reads
    a doubled comma as a literal comma, a single one as the next option.

    Type: escapeQemuOpt :: string -> string

    Example: escapeQemuOpt "/a,b" => "/a,,b"
  */
  escapeQemuOpt = s: builtins.replaceStrings [ "," ] [ ",," ] (toString s);

  /**
    Join `key=value` pairs into a QEMU option string, skipping null values
    and escaping every value.

    Type: qemuOpts :: string -> [{ name; value; }] -> string

    Example: qemuOpts "local" [ { name = "id"; value = "fs0"; } ] => "local,id=fs0"
  */
  qemuOpts =
    head: pairs:
    builtins.concatStringsSep "," (
      (if head == "" then [ ] else [ head ])
      ++ map (p: "${p.name}=${escapeQemuOpt p.value}") (builtins.filter (p: p.value != null) pairs)
    );
}
