# The light tier: a branch runner made by lib.mkBranchVM, run inside the
# Nix build sandbox. A probe service in the guest checks what must hold
# (SSH keys from the boot credentials, sshd, the agent's /status only with
# the token and the host side's Host, the MCP secrets out of the guest
# user's reach, the workspace writable by the guest user, the store image
# mounted), writes
# the results into the workspace and powers off; the build then asserts on
# them. `accel = "tcg"` forces software emulation (no KVM needed, slow).
{
  pkgs,
  self,
  accel,
}:
let
  inherit (pkgs) lib;
  system = pkgs.stdenv.hostPlatform.system;
  # The sandbox's build directory (Nix's sandbox-build-dir, /build by
  # default): the runner has its state directory baked in.
  stateDir = "/build/vm";

  probe =
    { pkgs, config, ... }:
    {
      systemd.services.agent-vm-probe = {
        wantedBy = [ "multi-user.target" ];
        after = [
          "sshd.service"
          "agent-vm-agent.service"
        ];
        path = [
          pkgs.curl
          pkgs.util-linux
        ];
        serviceConfig = {
          Type = "oneshot";
          ImportCredential = [ "agent-vm.agent-token" ];
        };
        script = ''
          check() {
            if "$@"; then echo "ok: $*"; else echo "FAIL: $*"; fi
          }
          url=http://127.0.0.1:${toString config.agent-vm.agent.port}/status
          # The host side's port is the same here (params.nix: 8000).
          token="$(cat "$CREDENTIALS_DIRECTORY/agent-vm.agent-token")"
          code() { curl -s -o /dev/null -w '%{http_code}' "$@" "$url"; }
          {
            check systemctl is-active --quiet sshd.service
            check test "$(stat -c %a /run/agent-vm/ssh/ssh_host_ed25519_key)" = 600
            check test -s /run/agent-vm/ssh/authorized_keys
            check curl -fsS --retry 60 --retry-delay 1 --retry-all-errors -o /dev/null \
              -H "Authorization: Bearer $token" "$url"
            check test "$(code)" = 401
            check test "$(code -H "Authorization: Bearer $token" -H 'Host: evil.example:8000')" = 403
            # The servers got the secrets (mcp-proxy is the unit's main process)...
            check grep -qs E2E_SECRET=only-for-the-servers \
              "/proc/$(systemctl show -P MainPID agent-vm-agent.service)/environ"
            # ...and the guest user cannot read them.
            check runuser -u dev -- sh -c '! cat /run/credentials/agent-vm-agent.service/agent-vm.mcp-secrets'
            check runuser -u dev -- sh -c '! grep -qs E2E_SECRET /proc/[0-9]*/environ'
            check mountpoint -q /workspace
            check test "$(findmnt -n -o FSTYPE /nix/.ro-store)" = erofs
            check runuser -u dev -- sh -c 'echo "written by $(id -un)" > /workspace/by-dev'
          } > /workspace/result 2>&1
          systemctl poweroff
        '';
      };
    };

  runner = self.lib.mkBranchVM {
    inherit system;
    modules = [ probe ];
    params = import ./params.nix {
      name = "startup-shutdown";
      inherit stateDir;
      # The build user inside the sandbox.
      user = {
        uid = 1000;
        gid = 100;
      };
      share = "9p";
      network = "none";
    };
  };
in
pkgs.runCommand "agent-vm-startup-shutdown-${accel}"
  {
    nativeBuildInputs = [
      runner
      pkgs.openssh
      pkgs.coreutils
    ];
    requiredSystemFeatures = lib.optional (accel == "kvm") "kvm";
    meta.timeout = if accel == "kvm" then 600 else 3600;
  }
  ''
    if [ "$NIX_BUILD_TOP" != /build ]; then
      echo "this check needs the Nix sandbox (sandbox-build-dir = /build)" >&2
      exit 1
    fi
    mkdir -p ${stateDir}/ssh ${stateDir}/workspace
    chmod 0777 ${stateDir}/workspace # the guest user writes here, whatever our uid
    ssh-keygen -q -t ed25519 -N "" -C host -f ${stateDir}/ssh/ssh_host_ed25519_key
    ssh-keygen -q -t ed25519 -N "" -C client -f ${stateDir}/ssh/id_ed25519
    mkdir -m 0700 ${stateDir}/secrets
    head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > ${stateDir}/secrets/agent-token
    echo E2E_SECRET=only-for-the-servers > ${stateDir}/secrets/mcp.env

    status=0
    AGENT_VM_ACCEL=${accel} timeout ${if accel == "kvm" then "300" else "3000"} run-agent-vm || status=$?
    result=${stateDir}/workspace/result
    if [ "$status" != 0 ] || [ ! -e "$result" ] || grep -q FAIL "$result"; then
      echo "run-agent-vm exited $status; probe results:" >&2
      cat "$result" >&2 || true
      echo "--- serial log (tail) ---" >&2
      tail -n 80 ${stateDir}/serial.log >&2 || true
      exit 1
    fi
    test "$(grep -c '^ok: ' "$result")" = 12
    test "$(cat ${stateDir}/workspace/by-dev)" = "written by dev"
    # QEMU created the file, as us: 9p's security_model=none.
    test "$(stat -c %u ${stateDir}/workspace/by-dev)" = "$(id -u)"
    mkdir $out
    cp "$result" ${stateDir}/workspace/by-dev $out/
  ''
