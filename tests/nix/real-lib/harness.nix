# Evaluates agent-vm's NixOS modules with a real nixpkgs lib (the
# lib.evalModules and lib.types of the nixpkgs under test) against option
# declarations typed as nixpkgs types them (nixos-options.nix), and returns
# what each case produced; run.py checks it. See README.md here.
{
  libDir,
  root,
  case,
}:
let
  lib = import (/. + libDir);
  pkgs = import ./pkgs.nix { inherit lib; };
  utils = import ./utils.nix { inherit lib; };
  repo = /. + root;

  nixos = [
    ./nixos-options.nix
    ./nixos-rest.nix
    ./nixpkgs-assertions.nix
    { _module.args = { inherit pkgs utils; }; }
  ];
  # nixpkgs as lib/mk-branch-vm.nix uses it: lib (with a nixosSystem that
  # evaluates the given modules with the stand-ins above) and packages.
  nixpkgs = {
    lib = lib // {
      nixosSystem =
        { modules }:
        lib.evalModules {
          modules = modules ++ nixos;
          specialArgs.modulesPath = ./modules;
        };
    };
    legacyPackages.x86_64-linux = pkgs;
  };
  runnerLib = import (repo + "/lib") { };
  mkBranchVM = import (repo + "/lib/mk-branch-vm.nix") {
    inherit nixpkgs runnerLib;
    guestModule = repo + "/modules/guest.nix";
    # As flake.nix passes it: the agent-vm package's proxy program.
    egressEngine = _: lib.getExe' pkgs.agent-vm "agent-vm-egress";
  };
  params = import (repo + "/nixos-tests/params.nix");

  guest =
    {
      user,
      share,
      network ? "open",
      modules ? [ ],
      userModule ? null,
    }:
    mkBranchVM {
      system = "x86_64-linux";
      inherit modules;
      params =
        params {
          name = "main-0123abcd";
          stateDir = "/home/u/.local/state/agent-vm/vms/main-0123abcd";
          inherit user share network;
        }
        // {
          inherit userModule;
        };
    };

  failed = config: map (a: a.message) (lib.filter (a: !a.assertion) config.assertions);

  fileSystem =
    fs:
    {
      inherit (fs) device fsType options neededForBoot;
    }
    // lib.optionalAttrs (fs.overlay.lowerdir != null) {
      overlay = {
        inherit (fs.overlay) lowerdir upperdir workdir;
      };
    };

  unit = u: {
    inherit (u)
      description
      wantedBy
      requiredBy
      before
      after
      wants
      unitConfig
      serviceConfig
      environment
      script
      ;
    path = map toString u.path;
  };

  userReport = u: {
    inherit (u)
      name
      uid
      group
      isNormalUser
      isSystemUser
      home
      createHome
      extraGroups
      ;
  };

  guestReport =
    runner:
    let
      c = runner.nixos.config;
      name = c.agent-vm.user.name;
    in
    {
      failedAssertions = failed c;
      fileSystems = lib.mapAttrs (_: fileSystem) c.fileSystems;
      user = userReport c.users.users.${name};
      users = lib.mapAttrs (_: userReport) c.users.users;
      groups = lib.mapAttrs (_: g: g.gid) c.users.groups;
      initrdModules = c.boot.initrd.availableKernelModules;
      sshd = {
        inherit (c.services.openssh) enable hostKeys authorizedKeysFiles;
        inherit (c.services.openssh.settings)
          PasswordAuthentication
          KbdInteractiveAuthentication
          PermitRootLogin
          AllowUsers
          ;
      };
      sudo = c.security.sudo.enable;
      autologin = c.services.getty.autologinUser;
      firewallPorts = c.networking.firewall.allowedTCPPorts;
      nftablesTables = lib.attrNames c.networking.nftables.tables;
      units = lib.mapAttrs (_: unit) (lib.filterAttrs (_: u: u.enable) c.systemd.services);
      agentVm = lib.mapAttrs (_: v: if lib.isDerivation v then v.name else v) c.system.build.agentVm;
      runnerText = runner.text;
      # The VM's QEMU command line: the runner's last QEMU (the first
      # probes KVM).
      runnerExec = lib.findFirst (lib.hasInfix "qemu-system") "" (
        lib.reverseList (lib.splitString "\n" runner.text)
      );
      # Every agent-vm option a user may set, and which of them the user's
      # module defines.
      settable = map (o: o.name) (
        lib.filter (o: lib.hasPrefix "agent-vm." o.name && !o.internal && !o.readOnly && o.visible) (
          lib.optionAttrSetToDocList runner.nixos.options
        )
      );
      setByUserModule = map (lib.concatStringsSep ".") (
        lib.filter (
          path:
          lib.any (d: lib.hasSuffix "user-module.nix" (toString d.file)) (
            lib.attrByPath path { definitionsWithLocations = [ ]; } runner.nixos.options
          ).definitionsWithLocations
        ) (map (o: o.loc) (lib.optionAttrSetToDocList runner.nixos.options))
      );
      agentServers = c.agent-vm.agent.servers;
      agent = {
        inherit (c.agent-vm.agent) user port backendPort;
      };
      egressEnabled = c.agent-vm.egress.enable;
      # The credential names the runner hands in (lib/), which the units
      # must import.
      credentialNames = runnerLib.credentials // {
        egress = runnerLib.egress.credentials;
      };
      etc = lib.mapAttrs (_: e: toString e.source) (lib.filterAttrs (_: e: e.enable) c.environment.etc);
      extraInit = c.environment.extraInit;
      nginx = {
        inherit (c.services.nginx)
          enable
          user
          group
          appendHttpConfig
          mapHashBucketSize
          ;
        virtualHosts = lib.mapAttrs (_: v: {
          inherit (v) default serverName;
          listen = map (l: { inherit (l) addr port ssl; }) v.listen;
          locations = lib.mapAttrs (_: l: {
            inherit (l)
              proxyPass
              extraConfig
              recommendedProxySettings
              proxyWebsockets
              ;
          }) v.locations;
        }) c.services.nginx.virtualHosts;
      };
    };

  host =
    vms:
    (lib.evalModules {
      modules = [
        (repo + "/modules/host.nix")
        {
          programs.agent-vm = {
            enable = true;
            package = pkgs.agent-vm;
            users = [ "alice" ];
          };
          services.agent-vm.vms = vms;
        }
      ]
      ++ nixos;
    }).config;

  hostReport = c: {
    failedAssertions = failed c;
    units = lib.mapAttrs (_: unit) (
      lib.filterAttrs (n: _: lib.hasPrefix "agent-vm-" n) c.systemd.services
    );
    users = lib.mapAttrs (_: userReport) c.users.users;
    kvmMembers = c.users.groups.kvm.members;
    agentVmGroup = c.users.groups ? agent-vm;
    tmpfiles = c.systemd.tmpfiles.rules;
    systemPackages = map (p: p.name) c.environment.systemPackages;
  };

  twoVms = {
    project-main = {
      repository = "/srv/src/project";
      branch = "main";
      sshPort = 2222;
      agentPort = 8000;
      config = ./user-module.nix;
    };
    project-feature = {
      repository = "/home/alice/src/project";
      branch = "feature/x";
      user = "alice";
      hostAddress = "192.168.1.10";
      sshPort = 2223;
      agentPort = 8001;
      memory = 4096;
      network = "none";
      ephemeral = true;
      autostart = false;
    };
  };
in
{
  # The CLI's defaults: a host user 1000:1000 whose host has virtiofsd.
  default-guest = guestReport (guest {
    user = {
      uid = 1000;
      gid = 1000;
    };
    share = "virtiofs";
  });
  # The host module's system user (uid < 1000) over 9p, with the host store.
  system-user-9p-host-store = guestReport (guest {
    user = {
      uid = 400;
      gid = 400;
    };
    share = "9p";
    modules = [ { agent-vm.store.source = "host"; } ];
  });
  # A user module that sets every option a user may set (a normal NixOS
  # user, gid 100: the users group).
  user-module = guestReport (guest {
    user = {
      uid = 1000;
      gid = 100;
    };
    share = "virtiofs";
    userModule = toString ./user-module.nix;
  });
  # A user module that sets an option the CLI owns: must fail (run.py
  # checks the message).
  conflicting-module = guestReport (guest {
    user = {
      uid = 1000;
      gid = 1000;
    };
    share = "9p";
    userModule = toString ./conflicting-module.nix;
  });
  # `--network allow` (the default for `up`): the same guest system, a
  # runner with the egress proxy.
  network-allow = guestReport (guest {
    user = {
      uid = 1000;
      gid = 1000;
    };
    share = "virtiofs";
    network = "allow";
  });
  # An MCP environment file in the workspace (which the agent reads and
  # writes): the agent module's assertion must refuse it.
  workspace-env-file = guestReport (guest {
    user = {
      uid = 1000;
      gid = 1000;
    };
    share = "virtiofs";
    modules = [ { agent-vm.agent.environmentFile = "/workspace/.env"; } ];
  });
  host-two-vms = hostReport (host twoVms);
  # 0.0.0.0 binds every address: a clash with 127.0.0.1 on the same port.
  host-port-clash = hostReport (
    host {
      a = twoVms.project-main // {
        hostAddress = "0.0.0.0";
      };
      b = twoVms.project-feature // {
        hostAddress = "127.0.0.1";
        sshPort = 2222;
      };
    }
  );
}
.${case}
