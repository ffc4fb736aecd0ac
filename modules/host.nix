# For NixOS hosts: the agent-vm command (programs.agent-vm) and VMs
# declared in the host's configuration (services.agent-vm.vms), each run
# by systemd as `agent-vm up --foreground`: started at boot when
# autostart, restarted when QEMU dies, powered down (ACPI) when the unit
# stops or the host shuts down. systemd is the supervisor; there is no
# daemon of our own.
{
  config,
  lib,
  pkgs,
  utils,
  ...
}:
let
  prog = config.programs.agent-vm;
  cfg = config.services.agent-vm;
  agentLib = import ../lib { };

  inherit (lib)
    mkOption
    mkEnableOption
    mkIf
    mkMerge
    types
    literalExpression
    ;

  serviceUser = "agent-vm";

  # The CLI's range (agent_vm.models.PORT_RANGE): a declared port it would
  # refuse is refused here, at evaluation, not when the unit starts.
  portType = types.ints.between 1024 65535;
  # An IPv4 address, as the CLI's --host takes it.
  ipv4Octet = "(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])";

  vmType = types.submodule {
    options = {
      repository = mkOption {
        type = types.strMatching "/.*";
        example = "/srv/src/project";
        description = ''
          The git repository the VM is for. Its user ({option}`user`) must
          be able to read it; it is marked a safe directory for git in the
          unit, whoever owns it.
        '';
      };
      branch = mkOption {
        type = types.str;
        example = "main";
        description = "The branch whose workspace the VM gets.";
      };
      user = mkOption {
        type = types.str;
        default = serviceUser;
        example = "alice";
        description = ''
          The host user the VM runs as (QEMU, the workspace's owner). The
          default is a system user made for the purpose.
        '';
      };
      hostAddress = mkOption {
        type = types.strMatching "${ipv4Octet}(\\.${ipv4Octet}){3}";
        default = "127.0.0.1";
        example = "192.168.1.10";
        description = ''
          The host address SSH and the agent port are bound to. Anything
          but a loopback address exposes both to the network.
        '';
      };
      sshPort = mkOption {
        type = portType;
        example = 2222;
        description = "The host port forwarded to the guest's SSH.";
      };
      agentPort = mkOption {
        type = portType;
        example = 8000;
        description = "The host port forwarded to the guest's agent service.";
      };
      memory = mkOption {
        type = types.ints.between 256 1048576;
        default = 2048;
        example = 4096;
        description = "Guest memory in MiB.";
      };
      cores = mkOption {
        type = types.ints.between 1 256;
        default = 2;
        example = 4;
        description = "Guest CPU cores.";
      };
      diskSize = mkOption {
        type = types.ints.between 512 16777216;
        default = 8192;
        example = 20480;
        description = "Size of the guest's disk in MiB (applies when the disk is made).";
      };
      network = mkOption {
        type = types.enum [
          "allow"
          "open"
          "none"
        ];
        default = "allow";
        example = "open";
        description = ''
          Outbound network: `allow` (only to {option}`allow`, through the
          VM's egress proxy, which can add credentials the guest never
          sees: `agent-vm secret add`), `open` (NAT, anywhere) or `none`
          (nothing). Enforced by QEMU on the host (restrict=on); the
          forwarded ports work in every mode.
        '';
      };
      allow = mkOption {
        type = types.listOf (types.strMatching "[*a-zA-Z0-9.:-]+");
        default = [ "cache.nixos.org" ];
        example = [
          "api.anthropic.com"
          "*.github.com"
          "github.com"
          "registry.npmjs.org:443"
        ];
        description = ''
          With `network = "allow"`: where the guest may connect. A name,
          `*.suffix` (not the bare suffix), optionally `:port` (without
          one: 443 and 80). Anything else gets a 403 that says how to
          allow it. A secret's domains are allowed as well.
        '';
      };
      ephemeral = mkOption {
        type = types.bool;
        default = false;
        example = true;
        description = "Whether to throw the guest disk away at every stop.";
      };
      workspaceMode = mkOption {
        type = types.enum [
          "share"
          "disk"
        ];
        default = "share";
        example = "disk";
        description = ''
          Where the branch's workspace lives: `share`, a directory in the
          state dir shared into the guest (live files on the host); `disk`,
          a disk of the VM's own, filled once with the branch's clone (no
          shared directory; work leaves it through `agent-vm diff`/`pull`;
          the VM can be suspended). Applies when the VM is made.
        '';
      };
      config = mkOption {
        type = types.nullOr types.path;
        default = null;
        example = literalExpression "./agent-guest.nix";
        description = ''
          A NixOS module added to the guest (packages, MCP servers under
          `agent-vm.agent.servers`). A path value is copied to the Nix store
          alone, so it must not import files beside it; a string is used as
          it is and read when the VM starts (for a module with imports).
        '';
      };
      mcpEnvironmentFile = mkOption {
        type = types.nullOr (types.strMatching "/.+");
        default = null;
        example = "/run/secrets/agent-vm-project-main.env";
        description = ''
          A file on the host of `NAME=value` lines for the guest's MCP
          servers (API tokens), read by `agent-vm up` when the unit starts
          and handed to the guest as a boot credential that only the
          servers' unit can read; the agent cannot. A string, not a path:
          it must never be copied into the Nix store. `user` must be able
          to read it (e.g. a secret managed by sops-nix or agenix).
        '';
      };
      autostart = mkOption {
        type = types.bool;
        default = true;
        example = false;
        description = ''
          Whether the VM starts at boot. Otherwise
          `systemctl start agent-vm-<name>` starts it.
        '';
      };
      readyTimeout = mkOption {
        type = types.ints.positive;
        default = 300;
        example = 600;
        description = "Seconds the VM has to answer SSH and the agent port once QEMU runs.";
      };
    };
  };

  # Each host user's VMs have a state dir of their own.
  stateDirOf = user: "${cfg.stateDir}/${user}";

  # safe.directory is honoured only in system or global git config.
  gitConfigOf =
    vm:
    pkgs.writeText "agent-vm-gitconfig" ''
      [safe]
      	directory = ${vm.repository}
      	directory = ${vm.repository}/.git
    '';

  unitOf = vm: {
    description = "agent-vm: ${vm.branch} of ${vm.repository}";
    wantedBy = lib.optional vm.autostart "multi-user.target";
    wants = [ "network-online.target" ];
    after = [
      "network-online.target"
      "nix-daemon.socket"
    ];
    # Type=notify: `agent-vm up --foreground` says READY once SSH and the
    # agent answer, so `systemctl start` and units ordered after this one
    # wait for a VM that works.
    serviceConfig = {
      Type = "notify";
      NotifyAccess = "main";
      User = vm.user;
      SupplementaryGroups = [ "kvm" ];
      WorkingDirectory = vm.repository;
      Environment = [ "GIT_CONFIG_GLOBAL=${gitConfigOf vm}" ];
      ExecStart = utils.escapeSystemdExecArgs (
        [ (lib.getExe prog.package) ]
        ++ agentLib.upArgs {
          stateDir = stateDirOf vm.user;
          vm = vm // {
            config = if builtins.isPath vm.config then "${vm.config}" else vm.config;
          };
          timeout = vm.readyTimeout;
        }
      );
      # A QEMU that died (crash, OOM, killed) is exit 15: start again; the
      # CLI recovers the VM's state.
      Restart = "on-failure";
      RestartSec = 10;
      # SIGTERM goes to agent-vm alone, which powers the guest down over
      # ACPI (then SIGTERM, SIGKILL to QEMU); systemd kills leftovers last.
      KillMode = "mixed";
      TimeoutStopSec = 90;
      # The first start builds the guest system.
      TimeoutStartSec = "30min";
    };
  };

  vmUsers = lib.unique (lib.mapAttrsToList (_: vm: vm.user) cfg.vms);

  portClashes = agentLib.portClashes cfg.vms;
in
{
  options.programs.agent-vm = {
    enable = mkEnableOption "the agent-vm command: per-branch NixOS VMs for AI coding agents";
    package = mkOption {
      type = types.package;
      example = literalExpression "inputs.agent-vm.packages.x86_64-linux.agent-vm";
      description = ''
        The agent-vm package. The flake's `nixosModules.host` sets it to its
        own `packages.<system>.agent-vm`.
      '';
    };
    users = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [ "alice" ];
      description = "Users given KVM access (the kvm group) to run VMs with the command.";
    };
  };

  options.services.agent-vm = {
    vms = mkOption {
      type = types.attrsOf vmType;
      default = { };
      example = literalExpression ''
        {
          project-main = {
            repository = "/srv/src/project";
            branch = "main";
            sshPort = 2222;
            agentPort = 8000;
            config = ./agent-guest.nix;
          };
        }
      '';
      description = ''
        VMs run by systemd as `agent-vm-<name>.service`. Removing one stops
        its VM; its state (disk, workspace) stays in
        {option}`services.agent-vm.stateDir` until you run
        `agent-vm --state-dir … destroy`.
      '';
    };
    stateDir = mkOption {
      type = types.strMatching "/.*";
      default = "/var/lib/agent-vm";
      example = "/srv/agent-vm";
      description = "Where declared VMs keep their state, one directory per user.";
    };
  };

  config = mkMerge [
    (mkIf prog.enable {
      environment.systemPackages = [ prog.package ];
      users.groups.kvm.members = prog.users;
    })

    (mkIf (cfg.vms != { }) {
      assertions = [
        {
          # At evaluation, not when the second unit fails to bind.
          assertion = portClashes == [ ];
          message = "services.agent-vm.vms: host ports clash: ${lib.concatStringsSep "; " portClashes}.";
        }
      ];

      users.users = lib.mkIf (lib.elem serviceUser vmUsers) {
        ${serviceUser} = {
          isSystemUser = true;
          group = serviceUser;
          extraGroups = [ "kvm" ];
          # nix keeps its cache under $HOME.
          home = stateDirOf serviceUser;
          createHome = true;
        };
      };
      users.groups = lib.mkIf (lib.elem serviceUser vmUsers) { ${serviceUser} = { }; };

      systemd.tmpfiles.rules = [
        "d ${cfg.stateDir} 0755 root root - -"
      ]
      ++ map (u: "d ${stateDirOf u} 0700 ${u} - - -") vmUsers;

      systemd.services = lib.mapAttrs' (name: vm: lib.nameValuePair "agent-vm-${name}" (unitOf vm)) cfg.vms;
    })
  ];
}
