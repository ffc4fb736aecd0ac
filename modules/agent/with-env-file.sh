#!/bin/sh
# Runs a command with the variables of a NAME=value file added to its
# environment: how the MCP servers get their secrets from the
# agent-vm.mcp-secrets credential without the file being a shell script
# (nothing in it is evaluated: no quotes, no expansion, no commands).
#
#   with-env-file FILE COMMAND [ARG...]
#
# A missing FILE adds nothing (the VM was given no secrets). A line that is
# not NAME=value stops with its number, never its content.
set -eu
file="$1"
shift
if [ -r "$file" ]; then
  n=0
  while IFS= read -r line || [ -n "$line" ]; do
    n=$((n + 1))
    case "$line" in
      '' | '#'*) continue ;;
    esac
    name="${line%%=*}"
    case "$name" in
      "$line" | '' | [0-9]* | *[!A-Za-z0-9_]*)
        echo "with-env-file: $file line $n: expected NAME=value" >&2
        exit 1
        ;;
    esac
    export "$line"
  done <"$file"
fi
exec "$@"
