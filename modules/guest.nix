# The agent-vm guest: a NixOS system booted by the runner from lib/ with
# its kernel and initrd directly (no boot loader), a per-VM ext4 disk for
# state, a read-only Nix store of its own, and the branch's workspace
# shared in. Per-VM values (name, keys, ports) arrive at boot, not in the
# closure, so every branch VM of a host user shares one system and one
# store image.
#
# The runner reads `config.system.build.agentVm`; lib/mk-branch-vm.nix
# wires the two together. The option names under `agent-vm` are the
# interface for a user's `--config` module.
{
  config,
  lib,
  pkgs,
  modulesPath,
  ...
}:
let
  cfg = config.agent-vm;
  # The fw_cfg credential names the runner hands the keys in under.
  inherit (import ../lib { }) credentials;

  inherit (lib)
    mkOption
    mkEnableOption
    mkDefault
    mkIf
    mkMerge
    types
    optionals
    ;

  toplevel = config.system.build.toplevel;
  storeDir = builtins.storeDir;

  # The closure's registration, loaded into the guest's Nix database at
  # boot. Passed on the kernel command line: referring to it from the
  # system itself would be a cycle.
  regInfo = pkgs.closureInfo { rootPaths = [ toplevel ]; };

  # A fixed file system UUID (and timestamps, -T 0): the same closure gives
  # the same image.
  storeImageUuid = "de989594-26de-42ec-8d2f-b9676d42c8c7";

  # A read-only erofs image of exactly this system's closure: the guest sees
  # these paths and nothing else of the host's store.
  storeImage =
    pkgs.runCommand "agent-vm-store.erofs"
      {
        nativeBuildInputs = [ pkgs.erofs-utils ];
        closure = pkgs.closureInfo {
          rootPaths = [
            toplevel
            regInfo
          ];
        };
      }
      ''
        # Store paths as a tar stream without their ${storeDir}/ prefix: the
        # image's root is the store directory itself. Symlink targets stay
        # absolute.
        tar --create --absolute-names --verbatim-files-from \
          --transform 'flags=rSh;s|^${storeDir}/||' \
          --files-from "$closure/store-paths" \
          | mkfs.erofs --quiet --force-uid=0 --force-gid=0 -T 0 -L nix-store \
              -U ${storeImageUuid} --tar=f "$out"
      '';

  # NixOS has a group for gid 100 already (`users`, the primary group of
  # normal users on NixOS hosts): reuse it rather than clash.
  usersGid = config.ids.gids.users;
  primaryGroup = if cfg.user.gid == usersGid then "users" else cfg.user.name;

  sharedFs =
    {
      tag,
      share,
      readOnly ? false,
    }:
    if share == "virtiofs" then
      {
        device = tag;
        fsType = "virtiofs";
        options = optionals readOnly [ "ro" ];
      }
    else
      {
        device = tag;
        fsType = "9p";
        options = [
          "trans=virtio"
          "version=9p2000.L"
          "msize=262144"
          "x-systemd.requires=modprobe@9pnet_virtio.service"
        ]
        ++ (if readOnly then [
          "ro"
          "cache=loose"
        ] else [ ]);
      };

  workspaceFs =
    if cfg.workspace.mode == "disk" then
      {
        # Made and filled by the CLI at create (ext4, the branch's clone).
        device = "/dev/disk/by-id/virtio-agent-vm-workspace";
        fsType = "ext4";
        options = [ "noatime" ];
      }
    else
      sharedFs { inherit (cfg.workspace) tag share; };

  idType = types.ints.between 1 4294967294;
in
{
  imports = [
    (modulesPath + "/profiles/minimal.nix")
    ./agent-service.nix
    ./egress.nix
  ];

  options.agent-vm = {
    user = {
      name = mkOption {
        type = types.strMatching "[a-z_][a-z0-9_-]{0,31}";
        default = "dev";
        example = "agent";
        internal = true; # the CLI logs in as this user
        description = ''
          The guest user the agent works as and SSH logs in as. It owns the
          workspace. Set by the CLI.
        '';
      };
      uid = mkOption {
        type = idType;
        default = 1000;
        example = 1001;
        internal = true; # the CLI's share ownership depends on it
        description = ''
          The guest user's uid. The CLI sets it to the host user's uid, so
          files in the shared workspace have the same owner on both sides
          (as root on the host it is 1000, see docs/architecture.md).
        '';
      };
      gid = mkOption {
        type = idType;
        default = 1000;
        example = 100;
        internal = true; # as uid
        description = ''
          The guest user's primary gid, the host user's gid. gid 100 is
          NixOS's `users` group, which the guest user then joins.
        '';
      };
      group = mkOption {
        type = types.str;
        readOnly = true;
        default = primaryGroup;
        defaultText = lib.literalMD "`users` for gid 100, else the user's name";
        description = "The guest user's primary group (derived from `gid`).";
      };
      sudo = mkEnableOption "passwordless sudo for the guest user";
    };

    workspace = {
      share = mkOption {
        type = types.enum [
          "9p"
          "virtiofs"
        ];
        default = "9p";
        example = "virtiofs";
        internal = true; # the runner's QEMU devices must match it
        description = ''
          How the workspace (and, with `store.source = "host"`, the host
          store) is shared, as the CLI chose: virtiofs is faster and needs
          a virtiofsd on the host, which the runner starts; 9p needs
          nothing but QEMU.
        '';
      };
      mode = mkOption {
        type = types.enum [
          "share"
          "disk"
        ];
        default = "share";
        example = "disk";
        internal = true; # the runner's QEMU devices must match it
        description = ''
          Where the workspace lives, as the CLI's `--workspace-mode` says:
          `share`, a host directory shared in (see `share`); `disk`, an
          ext4 disk of the VM's own (serial `agent-vm-workspace`), filled
          with the branch's clone when the VM was made. Work leaves a disk
          workspace only through `agent-vm diff`/`pull`.
        '';
      };
      mountPoint = mkOption {
        type = types.strMatching "/.+";
        default = "/workspace";
        example = "/src";
        description = "Where the workspace is mounted in the guest.";
      };
      tag = mkOption {
        type = types.strMatching "[a-z0-9][a-z0-9-]{0,30}";
        default = "workspace";
        internal = true;
        description = "The share's tag; the runner uses the same one.";
      };
    };

    store = {
      source = mkOption {
        type = types.enum [
          "image"
          "host"
        ];
        default = "image";
        example = "host";
        description = ''
          Where the guest's /nix/store comes from. `image`: a read-only
          erofs image of exactly this system's closure, built once per
          configuration; the guest sees nothing else of the host's store.
          `host`: the host's whole /nix/store shared read-only. Nothing to
          build, but the guest can read every path in the host's store
          (including any secret that ever entered it).
        '';
      };
      writable = mkOption {
        type = types.bool;
        default = true;
        example = false;
        description = ''
          Whether the guest can add to its store (`nix build`, `nix shell`
          inside the VM): a tmpfs overlay on the read-only store. What is
          added is lost at the next boot; the workspace and home directory
          are not.
        '';
      };
    };

    network.outbound = mkOption {
      type = types.enum [
        "open"
        "none"
      ];
      default = "open";
      example = "none";
      description = ''
        Outbound connections from inside the guest. `none` drops them in
        the guest's own firewall. That is a second layer only: the CLI's
        `--network none` is the enforcement, on the host (QEMU's
        `restrict=on`), out of the guest's reach.
      '';
    };

    resume.setClock = mkOption {
      type = types.bool;
      default = true;
      example = false;
      description = ''
        Whether to run the QEMU guest agent, through which the CLI steps
        the guest's clock to the host's right after `agent-vm resume` (the
        clock stood still while the VM was suspended). Without it a resumed
        guest's clock is behind by the time it was suspended.
      '';
    };

    console.autologin = mkOption {
      type = types.bool;
      default = true;
      example = false;
      description = ''
        Log the guest user in on the serial console (`agent-vm console`).
        The console socket is in the VM's private state directory, so only
        the host user reaches it.
      '';
    };
  };

  config = mkMerge [
    {
      assertions = [
        {
          assertion =
            !(builtins.elem cfg.workspace.mountPoint [
              "/"
              "/nix"
            ])
            && !(lib.hasPrefix "/nix/" cfg.workspace.mountPoint);
          message = "agent-vm.workspace.mountPoint cannot be /, /nix or under /nix (it is ${cfg.workspace.mountPoint}).";
        }
      ];
      system.stateVersion = mkDefault "25.11";
      networking.hostName = mkDefault "agent-vm"; # the runner sets the VM's own at boot

      # Direct kernel boot, systemd in the initrd (it imports the fw_cfg
      # credentials early and mounts the read-only store overlay).
      boot.loader.grub.enable = false;
      boot.initrd.systemd.enable = true;
      # ext4, erofs and overlay follow from the needed-for-boot mounts.
      boot.initrd.availableKernelModules = [
        "virtio_pci"
        "virtio_blk"
        "qemu_fw_cfg"
      ]
      ++ optionals (cfg.store.source == "host") (
        if cfg.workspace.share == "virtiofs" then
          [ "virtiofs" ]
        else
          [
            "9p"
            "9pnet_virtio"
          ]
      );
      # One UART: probing the absent ttyS1-3 costs seconds of boot.
      boot.kernelParams = [ "8250.nr_uarts=1" ];
      system.switch.enable = mkDefault false; # the VM is rebuilt, never switched
      services.timesyncd.enable = mkDefault false; # the clock comes from QEMU
      # The channel is lib/qemu-args.nix's virtserialport; the CLI sends
      # guest-set-time after a resume (python/agent_vm/guestclock.py).
      services.qemuGuest.enable = mkDefault cfg.resume.setClock;

      fileSystems = {
        "/" = {
          device = "/dev/disk/by-id/virtio-agent-vm-disk"; # formatted by the runner
          fsType = "ext4";
        };
        "/nix/.ro-store" = {
          neededForBoot = true;
        }
        // (
          if cfg.store.source == "image" then
            {
              device = "/dev/disk/by-id/virtio-agent-vm-store";
              fsType = "erofs";
              options = [ "ro" ];
            }
          else
            sharedFs {
              tag = "nix-store";
              inherit (cfg.workspace) share;
              readOnly = true;
            }
        );
        "/nix/store" = {
          neededForBoot = true;
        }
        // (
          if cfg.store.writable then
            {
              overlay = {
                lowerdir = [ "/nix/.ro-store" ];
                upperdir = "/nix/.rw-store/upper";
                workdir = "/nix/.rw-store/work";
              };
            }
          else
            {
              device = "/nix/.ro-store";
              options = [ "bind" ];
            }
        );
        "/nix/.rw-store" = mkIf cfg.store.writable {
          device = "tmpfs";
          fsType = "tmpfs";
          options = [ "mode=0755" ];
          neededForBoot = true;
        };
      };

      # The database describes exactly this boot's store: the overlay's
      # additions were on tmpfs and are gone.
      boot.postBootCommands = mkIf config.nix.enable ''
        if [[ "$(cat /proc/cmdline)" =~ regInfo=([^ ]*) ]]; then
          rm -rf /nix/var/nix/db
          ${config.nix.package.out}/bin/nix-store --load-db < "''${BASH_REMATCH[1]}"
        fi
      '';

      users = {
        mutableUsers = false;
        # Nobody has a password: the guest user logs in with the VM's key,
        # which arrives at boot (below), so NixOS cannot see it at build time.
        allowNoPasswordLogin = true;
        groups = mkIf (primaryGroup != "users") { ${primaryGroup}.gid = cfg.user.gid; };
        users.${cfg.user.name} = {
          uid = cfg.user.uid;
          group = primaryGroup;
          # NixOS reserves uids below 1000 for system users; a host user
          # (or the host module's service user) can have one.
          isNormalUser = cfg.user.uid >= 1000;
          isSystemUser = cfg.user.uid < 1000;
          home = "/home/${cfg.user.name}";
          createHome = true;
          useDefaultShell = true;
          extraGroups = [ "systemd-journal" ] ++ optionals cfg.user.sudo [ "wheel" ];
        };
      };
      security.sudo = {
        enable = mkDefault cfg.user.sudo;
        wheelNeedsPassword = false;
      };
      services.getty.autologinUser = mkIf cfg.console.autologin cfg.user.name;

      # SSH with the VM's own host key and client key, both handed in by the
      # runner as fw_cfg credentials (systemd imports them into
      # /run/credentials/@system, root only). Nothing secret is in the
      # store or on the guest disk: /run is tmpfs.
      services.openssh = {
        enable = true;
        hostKeys = [ ];
        authorizedKeysInHomedir = false;
        authorizedKeysFiles = [ "/run/agent-vm/ssh/authorized_keys" ];
        settings = {
          PasswordAuthentication = false;
          KbdInteractiveAuthentication = false;
          PermitRootLogin = "no";
          AllowUsers = [ cfg.user.name ];
        };
        extraConfig = ''
          HostKey /run/agent-vm/ssh/ssh_host_ed25519_key
        '';
      };
      # No host key is generated in the guest (hostKeys = [ ]): the unit
      # that would would only log its refusal at every boot.
      systemd.services.sshd-keygen.enable = false;

      # The runner grows the disk when the VM's disk size goes up (`agent-vm
      # update --disk-size`); the file system follows here, before sshd so
      # the room is there once the VM is ready. ext4 grows while mounted; with
      # nothing to grow this returns at once.
      systemd.services.agent-vm-grow-root = {
        description = "Grow the root file system to the size of its disk";
        wantedBy = [ "multi-user.target" ];
        before = [ "sshd.service" ];
        serviceConfig = {
          Type = "oneshot";
          RemainAfterExit = true;
          ExecStart = "${pkgs.e2fsprogs}/bin/resize2fs ${config.fileSystems."/".device}";
        };
      };
      systemd.services.agent-vm-credentials = {
        description = "Install the VM's SSH keys from its boot credentials";
        wantedBy = [ "multi-user.target" ];
        requiredBy = [ "sshd.service" ];
        before = [ "sshd.service" ];
        serviceConfig = {
          Type = "oneshot";
          RemainAfterExit = true;
          ImportCredential = [
            credentials.sshHostKey
            credentials.authorizedKeys
          ];
        };
        script = ''
          for c in ${credentials.sshHostKey} ${credentials.authorizedKeys}; do
            if [ ! -s "$CREDENTIALS_DIRECTORY/$c" ]; then
              echo "agent-vm: credential $c is missing: start this VM with its runner (agent-vm start)" >&2
              exit 1
            fi
          done
          install -d -m 0755 /run/agent-vm/ssh
          install -m 0600 "$CREDENTIALS_DIRECTORY/${credentials.sshHostKey}" /run/agent-vm/ssh/ssh_host_ed25519_key
          # sshd reads authorized keys as the user: world-readable, root-owned.
          install -m 0644 "$CREDENTIALS_DIRECTORY/${credentials.authorizedKeys}" /run/agent-vm/ssh/authorized_keys
        '';
      };

      # QEMU user networking has fixed addresses: configure them statically
      # instead of waiting for DHCP, and do not wait for "online".
      networking.useDHCP = false;
      networking.useNetworkd = true;
      systemd.network.wait-online.enable = false;
      systemd.network.networks."10-agent-vm" = {
        matchConfig.Type = "ether";
        address = [ "10.0.2.15/24" ];
        gateway = [ "10.0.2.2" ];
        dns = [ "10.0.2.3" ];
        networkConfig.IPv6AcceptRA = false;
      };
      # Inbound: SSH (openssh opens 22) and the agent port (agent-service.nix).
      networking.firewall.enable = true;
      networking.nftables.enable = mkDefault true;

      system.build.agentVm = {
        kernel = "${config.system.build.kernel}/${config.system.boot.loader.kernelFile}";
        initrd = "${config.system.build.initialRamdisk}/${config.system.boot.loader.initrdFile}";
        inherit toplevel;
        inherit (config.boot) kernelParams;
        regInfo = if config.nix.enable then regInfo else null;
        storeImage = if cfg.store.source == "image" then storeImage else null;
        hostStore = cfg.store.source == "host";
        agentPort = config.agent-vm.agent.port;
      };
    }

    {
      # Its own block: a mount point that clashes with one above is an
      # option conflict (and the assertion), not a Nix syntax error.
      # nofail: without the workspace the VM still boots and SSH still
      # answers, so the cause can be looked at; the agent service needs it.
      fileSystems.${cfg.workspace.mountPoint} = workspaceFs // {
        options = workspaceFs.options ++ [ "nofail" ];
      };
    }

    (mkIf (cfg.network.outbound == "none") {
      networking.nftables.enable = true;
      networking.nftables.tables.agent-vm-egress = {
        family = "inet";
        content = ''
          chain output {
            type filter hook output priority 0; policy drop;
            oifname "lo" accept
            ct state established,related accept
          }
        '';
      };
    })
  ];
}
