#!/bin/sh
# Writes the reverse proxy's token-bearing configuration for the agent port:
# nginx `map` blocks (http context) whose variables the agent port's
# location checks (nginx-agent-location.conf), generated at boot from the VM's credential into /run (tmpfs), so
# the token is never in the Nix store, an image or the guest's disk.
#
#   agent-auth-conf TOKEN_FILE OUT_FILE [GROUP]
#
# TOKEN_FILE: the agent-vm.agent-token credential (64 lowercase hex digits).
# The accepted Host values come from the kernel command line
# (agent_vm.agent_hosts=127.0.0.1:8000,localhost:8000, see lib/agent.nix).
# OUT_FILE is written 0600 root, or 0640 root:GROUP for an nginx whose
# master process runs as GROUP's user (NixOS). AGENT_VM_CMDLINE names another
# file to read the command line from (tests).
set -eu
token_file="$1"
out="$2"
group="${3:-}"

token="$(tr -d '\n' <"$token_file")"
# The token ends up inside nginx's configuration: nothing but hex passes.
case "$token" in
  *[!0-9a-f]*) echo "agent-auth-conf: the agent token is not hex" >&2; exit 1 ;;
esac
if [ "${#token}" -ne 64 ]; then
  echo "agent-auth-conf: the agent token is not 64 hex digits" >&2
  exit 1
fi

hosts=""
for word in $(cat "${AGENT_VM_CMDLINE:-/proc/cmdline}"); do
  case "$word" in
    agent_vm.agent_hosts=*) hosts="${word#*=}" ;;
  esac
done
if [ -z "$hosts" ]; then
  echo "agent-auth-conf: no agent_vm.agent_hosts= on the kernel command line: start this VM with its runner" >&2
  exit 1
fi

umask 077
tmp="$out.tmp"
{
  echo "# Generated at boot by agent-auth-conf from the VM's credential."
  echo "map \$http_authorization \$agent_vm_token_ok {"
  echo "  default 0;"
  echo "  \"Bearer $token\" 1;"
  echo "}"
  echo "map \$http_host \$agent_vm_host_ok {"
  echo "  default 0;"
  old_ifs="$IFS"
  IFS=,
  for h in $hosts; do
    case "$h" in
      '' | *[!a-z0-9.:-]*) echo "agent-auth-conf: bad host '$h'" >&2; exit 1 ;;
    esac
    echo "  \"$h\" 1;"
  done
  IFS="$old_ifs"
  echo "}"
  echo "map \$agent_vm_token_ok \$agent_vm_challenge {"
  echo "  0 'Bearer realm=\"agent-vm\"';"
  echo "  default \"\";"
  echo "}"
} >"$tmp"
if [ -n "$group" ]; then
  chgrp "$group" "$tmp"
  chmod 0640 "$tmp"
fi
mv "$tmp" "$out"
