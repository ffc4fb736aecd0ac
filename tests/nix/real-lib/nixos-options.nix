# The NixOS options agent-vm's modules set or read, declared as nixpkgs
# declares them (same types, defaults where ours depend on them), for
# evaluating modules/guest.nix, agent-service.nix and host.nix with the
# real nixpkgs lib but without the rest of NixOS. Not nixpkgs code: each
# declaration is written from the type nixpkgs gives it, in the file named
# beside it (paths in nixpkgs; read with the search tool from NixOS/nixpkgs
# and, where its stored copy predates the option, the fork faukah/nixpkgs
# at 3b20077c, a recent master). Where nixpkgs' type carries a check, the
# check is the same; merges are the module system's own.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  inherit (lib) mkOption types;

  # nixos/modules/tasks/filesystems.nix: `nonEmptyStr`, and mount points
  # "non-empty without trailing slash".
  isNonEmpty = s: builtins.match "[ \t\n]*" s == null;
  nonEmptyStr = types.addCheck types.str isNonEmpty;
  nonEmptyWithoutTrailingSlash = types.addCheck types.str (
    s: isNonEmpty s && builtins.match ".+/" s == null
  );

  # nixos/lib/systemd-lib.nix: `unitNameType`.
  unitNameType = types.strMatching "[a-zA-Z0-9@%:_.\\-]+[.](service|socket|device|mount|automount|swap|target|path|timer|scope|slice)";

  # nixos/lib/systemd-unit-options.nix: `unitOption`. Lists from several
  # definitions are concatenated; anything else must be defined equally.
  unitOption = lib.mkOptionType {
    name = "systemd option";
    merge =
      loc: defs:
      if lib.any (def: builtins.isList def.value) defs then
        lib.concatMap (def: lib.toList def.value) defs
      else
        lib.mergeEqualOption loc defs;
  };
  # ... and `checkService`: Type and Restart take only systemd's values.
  serviceConfigType = types.addCheck (types.attrsOf unitOption) (
    attrs:
    lib.elem (attrs.Type or "simple") [
      "exec"
      "simple"
      "forking"
      "oneshot"
      "dbus"
      "notify"
      "notify-reload"
      "idle"
    ]
    && lib.elem (attrs.Restart or "no") [
      "no"
      "on-success"
      "on-failure"
      "on-abnormal"
      "on-abort"
      "always"
    ]
  );

  listOfUnits = mkOption {
    type = types.listOf unitNameType;
    default = [ ];
  };

  # nixos/lib/systemd-unit-options.nix: the service options agent-vm uses.
  serviceOptions = {
    options = {
      enable = mkOption {
        type = types.bool;
        default = true;
      };
      description = mkOption {
        type = types.singleLineStr;
        default = "";
      };
      wantedBy = listOfUnits;
      requiredBy = listOfUnits;
      wants = listOfUnits;
      requires = listOfUnits;
      after = listOfUnits;
      before = listOfUnits;
      unitConfig = mkOption {
        type = types.attrsOf unitOption;
        default = { };
      };
      serviceConfig = mkOption {
        type = serviceConfigType;
        default = { };
      };
      environment = mkOption {
        type = types.attrsOf (
          types.nullOr (
            types.oneOf [
              types.str
              types.path
              types.package
            ]
          )
        );
        default = { };
      };
      path = mkOption {
        type = types.listOf (
          types.oneOf [
            types.package
            types.str
          ]
        );
        default = [ ];
      };
      script = mkOption {
        type = types.lines;
        default = "";
      };
    };
  };

  # nixos/modules/tasks/filesystems.nix (coreFileSystemOpts,
  # fileSystemOpts), nixos/modules/system/boot/stage-1.nix (neededForBoot),
  # nixos/modules/tasks/filesystems/overlayfs.nix (overlay).
  fileSystemOptions =
    { name, config, ... }:
    {
      # overlayfs.nix: an overlay is mounted as such.
      config = lib.mkIf (config.overlay.lowerdir != null) {
        fsType = "overlay";
        device = lib.mkDefault "overlay";
      };
      options = {
        mountPoint = mkOption {
          type = nonEmptyWithoutTrailingSlash;
          default = name;
        };
        device = mkOption {
          type = types.nullOr nonEmptyStr;
          default = null;
        };
        fsType = mkOption {
          type = nonEmptyStr;
          default = "auto";
        };
        options = mkOption {
          type = types.nonEmptyListOf nonEmptyStr;
          default = [ "defaults" ];
        };
        neededForBoot = mkOption {
          type = types.bool;
          default = false;
        };
        overlay = {
          lowerdir = mkOption {
            type = types.nullOr (types.nonEmptyListOf (types.either types.str types.pathInStore));
            default = null;
          };
          upperdir = mkOption {
            type = types.nullOr types.str;
            default = null;
          };
          # No default in nixpkgs either.
          workdir = mkOption { type = types.nullOr types.str; };
        };
      };
    };

  # nixos/modules/config/users-groups.nix (userOpts, groupOpts).
  userOptions =
    { name, ... }:
    {
      options = {
        name = mkOption {
          type = types.passwdEntry types.str;
          default = name;
        };
        uid = mkOption {
          type = types.nullOr types.int;
          default = null;
        };
        isSystemUser = mkOption {
          type = types.bool;
          default = false;
        };
        isNormalUser = mkOption {
          type = types.bool;
          default = false;
        };
        group = mkOption {
          type = types.str;
          default = "";
        };
        extraGroups = mkOption {
          type = types.listOf types.str;
          default = [ ];
        };
        home = mkOption {
          type = types.passwdEntry types.path;
          default = "/var/empty";
        };
        createHome = mkOption {
          type = types.bool;
          default = false;
        };
        useDefaultShell = mkOption {
          type = types.bool;
          default = false;
        };
      };
    };
  groupOptions =
    { name, ... }:
    {
      options = {
        name = mkOption {
          type = types.passwdEntry types.str;
          default = name;
        };
        gid = mkOption {
          type = types.nullOr types.int;
          default = null;
        };
        members = mkOption {
          type = types.listOf (types.passwdEntry types.str);
          default = [ ];
        };
      };
    };

  # nixos/modules/system/etc/etc.nix: one `environment.etc` entry. `text`
  # becomes a store file that is the `source`.
  etcOptions =
    {
      name,
      config,
      options,
      ...
    }:
    {
      options = {
        enable = bool true;
        target = mkOption { type = types.str; };
        text = mkOption {
          type = types.nullOr types.lines;
          default = null;
        };
        source = mkOption { type = types.path; };
        mode = mkOption {
          type = types.str;
          default = "symlink";
        };
        uid = mkOption {
          type = types.int;
          default = 0;
        };
        gid = mkOption {
          type = types.int;
          default = 0;
        };
        user = mkOption {
          type = types.str;
          default = "+${toString config.uid}";
        };
        group = mkOption {
          type = types.str;
          default = "+${toString config.gid}";
        };
      };
      config = {
        target = lib.mkDefault name;
        source = lib.mkIf (config.text != null) (
          lib.mkDerivedConfig options.text (pkgs.writeText ("etc-" + lib.replaceStrings [ "/" ] [ "-" ] name))
        );
      };
    };

  # nixos/modules/services/web-servers/nginx/vhost-options.nix: the
  # virtual host options agent-service.nix sets or nginx's module reads.
  nginxListenOptions = {
    options = {
      addr = mkOption { type = types.str; };
      port = mkOption {
        type = types.nullOr types.port;
        default = null;
      };
      ssl = bool false;
      proxyProtocol = bool false;
      extraParameters = mkOption {
        type = types.listOf types.str;
        default = [ ];
      };
    };
  };
  # ... location-options.nix (its `config` is the system's).
  nginxLocationOptions = {
    options = {
      proxyPass = mkOption {
        type = types.nullOr types.str;
        default = null;
      };
      proxyWebsockets = bool false;
      return = mkOption {
        type = types.nullOr (
          types.oneOf [
            types.str
            types.int
          ]
        );
        default = null;
      };
      extraConfig = mkOption {
        type = types.lines;
        default = "";
      };
      priority = mkOption {
        type = types.int;
        default = 1000;
      };
      recommendedProxySettings = bool config.services.nginx.recommendedProxySettings;
    };
  };
  nginxVhostOptions = {
    options = {
      serverName = mkOption {
        type = types.nullOr types.str;
        default = null;
      };
      serverAliases = mkOption {
        type = types.listOf types.str;
        default = [ ];
      };
      listen = mkOption {
        type = types.listOf (types.submodule nginxListenOptions);
        default = [ ];
      };
      listenAddresses = mkOption {
        type = types.listOf types.str;
        default = [ ];
      };
      addSSL = bool false;
      onlySSL = bool false;
      forceSSL = bool false;
      rejectSSL = bool false;
      enableACME = bool false;
      default = bool false;
      extraConfig = mkOption {
        type = types.lines;
        default = "";
      };
      locations = mkOption {
        type = types.attrsOf (types.submodule nginxLocationOptions);
        default = { };
      };
    };
  };

  bool = default: mkOption {
    type = types.bool;
    inherit default;
  };
in
{
  options = {
    # nixos/modules/misc/assertions.nix
    assertions = mkOption {
      type = types.listOf types.unspecified;
      default = [ ];
    };
    warnings = mkOption {
      type = types.listOf types.str;
      default = [ ];
    };
    # nixos/modules/misc/nixpkgs.nix
    nixpkgs.hostPlatform = mkOption { type = types.either types.str types.attrs; };
    # nixos/modules/misc/version.nix
    system.stateVersion = mkOption { type = types.str; };
    system.nixos.release = mkOption {
      type = types.str;
      default = "25.11";
    };
    # nixos/modules/system/build.nix
    system.build = mkOption {
      type = types.submoduleWith {
        modules = [ { freeformType = types.lazyAttrsOf (types.uniq types.unspecified); } ];
      };
      default = { };
    };
    # nixos/modules/system/boot/kernel.nix
    system.boot.loader.kernelFile = mkOption { type = types.str; };
    system.boot.loader.initrdFile = mkOption { type = types.str; };
    boot.kernelParams = mkOption {
      type = types.listOf (types.strMatching ''([^"[:space:]]|"[^"]*")+'');
      default = [ ];
    };
    boot.initrd.availableKernelModules = mkOption {
      type = types.listOf types.str;
      default = [ ];
    };
    # nixos/modules/system/boot/loader/grub/grub.nix
    boot.loader.grub.enable = bool true;
    # nixos/modules/system/boot/systemd/initrd.nix
    boot.initrd.systemd.enable = bool false;
    # nixos/modules/system/boot/stage-2.nix
    boot.postBootCommands = mkOption {
      type = types.lines;
      default = "";
    };
    # nixos/modules/system/activation/switchable-system.nix
    system.switch.enable = bool true;
    # nixos/modules/system/boot/timesyncd.nix
    services.timesyncd.enable = bool true;
    # nixos/modules/virtualisation/qemu-guest-agent.nix
    services.qemuGuest.enable = bool false;
    # nixos/modules/misc/ids.nix (no type there either)
    ids.gids = mkOption { };
    # nixos/modules/config/nix.nix
    nix.enable = bool true;
    nix.package = mkOption { type = types.package; };
    nix.settings = mkOption {
      type = types.submodule { freeformType = types.attrsOf types.unspecified; };
      default = { };
    };
    # nixos/modules/tasks/filesystems.nix
    fileSystems = mkOption {
      type = types.attrsOf (types.submodule fileSystemOptions);
      default = { };
    };
    # nixos/modules/config/users-groups.nix
    users.mutableUsers = bool true;
    users.allowNoPasswordLogin = bool false;
    users.users = mkOption {
      type = types.attrsOf (types.submodule userOptions);
      default = { };
    };
    users.groups = mkOption {
      type = types.attrsOf (types.submodule groupOptions);
      default = { };
    };
    # nixos/modules/security/sudo.nix
    security.sudo.enable = bool true;
    security.sudo.wheelNeedsPassword = bool true;
    # nixos/modules/services/ttys/getty.nix
    services.getty.autologinUser = mkOption {
      type = types.nullOr types.str;
      default = null;
    };
    # nixos/modules/services/networking/ssh/sshd.nix
    services.openssh = {
      enable = bool false;
      hostKeys = mkOption {
        type = types.listOf types.attrs;
        default = [ ];
      };
      authorizedKeysInHomedir = bool true;
      authorizedKeysFiles = mkOption {
        type = types.listOf types.str;
        default = [ ];
      };
      extraConfig = mkOption {
        type = types.lines;
        default = "";
      };
      settings = mkOption {
        default = { };
        type = types.submodule {
          freeformType = types.attrsOf (
            types.oneOf [
              types.bool
              types.int
              types.str
              (types.listOf types.str)
            ]
          );
          options = {
            PasswordAuthentication = bool true;
            KbdInteractiveAuthentication = bool true;
            PermitRootLogin = mkOption {
              type = types.enum [
                "yes"
                "without-password"
                "prohibit-password"
                "forced-commands-only"
                "no"
              ];
              default = "prohibit-password";
            };
            AllowUsers = mkOption {
              type = types.nullOr (types.listOf types.str);
              default = null;
            };
          };
        };
      };
    };
    # nixos/modules/system/boot/systemd.nix
    systemd.services = mkOption {
      type = types.attrsOf (types.submodule serviceOptions);
      default = { };
    };
    # nixos/modules/system/boot/systemd/tmpfiles.nix
    systemd.tmpfiles.rules = mkOption {
      type = types.listOf types.str;
      default = [ ];
    };
    # nixos/modules/system/boot/networkd.nix
    systemd.network.wait-online.enable = bool true;
    systemd.network.networks = mkOption {
      default = { };
      type = types.attrsOf (
        types.submodule {
          options = {
            matchConfig = mkOption {
              type = types.attrsOf unitOption;
              default = { };
            };
            networkConfig = mkOption {
              type = types.attrsOf unitOption;
              default = { };
            };
            address = mkOption {
              type = types.listOf types.str;
              default = [ ];
            };
            gateway = mkOption {
              type = types.listOf types.str;
              default = [ ];
            };
            dns = mkOption {
              type = types.listOf types.str;
              default = [ ];
            };
          };
        }
      );
    };
    # nixos/modules/tasks/network-interfaces.nix
    networking.hostName = mkOption {
      type = types.strMatching "^$|^[[:alnum:]]([[:alnum:]_-]{0,61}[[:alnum:]])?$";
      default = "nixos";
    };
    networking.useDHCP = bool true;
    networking.useNetworkd = bool false;
    # nixos/modules/services/networking/firewall.nix
    networking.firewall.enable = bool true;
    networking.firewall.allowedTCPPorts = mkOption {
      type = types.listOf types.port;
      default = [ ];
    };
    # nixos/modules/services/networking/nftables.nix
    networking.nftables.enable = bool false;
    networking.nftables.tables = mkOption {
      default = { };
      type = types.attrsOf (
        types.submodule (
          { name, ... }:
          {
            options = {
              enable = bool true;
              name = mkOption {
                type = types.str;
                default = name;
              };
              content = mkOption { type = types.lines; };
              family = mkOption {
                type = types.enum [
                  "ip"
                  "ip6"
                  "inet"
                  "arp"
                  "bridge"
                  "netdev"
                ];
              };
            };
          }
        )
      );
    };
    # nixos/modules/system/etc/etc.nix
    environment.etc = mkOption {
      type = types.attrsOf (types.submodule etcOptions);
      default = { };
    };
    # nixos/modules/config/shells-environment.nix
    environment.extraInit = mkOption {
      type = types.lines;
      default = "";
    };
    # nixos/modules/services/web-servers/nginx/default.nix
    services.nginx = {
      enable = bool false;
      user = mkOption {
        type = types.str;
        default = "nginx";
      };
      group = mkOption {
        type = types.str;
        default = "nginx";
      };
      recommendedProxySettings = bool false;
      appendHttpConfig = mkOption {
        type = types.lines;
        default = "";
      };
      mapHashBucketSize = mkOption {
        type = types.nullOr types.ints.positive;
        default = null;
      };
      validateConfigFile = bool true;
      virtualHosts = mkOption {
        type = types.attrsOf (types.submodule nginxVhostOptions);
        default = {
          localhost = { };
        };
      };
    };
    # nixos/modules/config/system-path.nix
    environment.systemPackages = mkOption {
      type = types.listOf types.package;
      default = [ ];
    };
  };
}
