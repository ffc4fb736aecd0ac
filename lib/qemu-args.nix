# The QEMU command line of a branch VM, as a list of arguments. Pure: it
# needs only builtins, so tests evaluate it with `nix-instantiate --eval`
# and assert on every flag that matters for safety (forwards bound to the
# chosen host address, restrict=on, the share's security model).
{ strings }:
let
  inherit (strings) qemuOpts;

  archs = {
    x86_64-linux = {
      machine = "q35";
      console = "ttyS0";
      pci = true;
    };
    aarch64-linux = {
      machine = "virt";
      console = "ttyAMA0";
      pci = true;
    };
  };
in
rec {
  /**
    Paths of the files the runner and the CLI share inside the VM's state
    directory (see docs/contract.md).

    Unix sockets are relative to the state directory, which is the runner's
    working directory: a socket address holds at most 107 bytes, and a state
    directory under a long home path would not fit.

    Type: statePaths :: string -> attrset
  */
  statePaths = stateDir: {
    disk = "${stateDir}/disk.qcow2";
    pidFile = "${stateDir}/qemu.pid";
    qmpSocket = "qmp.sock";
    consoleSocket = "console.sock";
    serialLog = "${stateDir}/serial.log";
    virtiofsSocket = "virtiofs.sock";
    hostKey = "${stateDir}/ssh/ssh_host_ed25519_key";
    authorizedKeys = "${stateDir}/ssh/id_ed25519.pub";
  };

  /**
    Host forwards of a VM: SSH and the agent port, each bound to the
    explicit host address. QEMU binds every interface when the address is
    empty, which would expose the agent to the network.

    Type: forwards :: attrset -> [string]
  */
  forwards = params: [
    "hostfwd=tcp:${params.hostAddress}:${toString params.sshPort}-:22"
    "hostfwd=tcp:${params.hostAddress}:${toString params.agentPort}-:${toString params.guestAgentPort}"
  ];

  /**
    The full argument list (without the program name and without the
    accelerator, which the runner picks at run time).

    Type: qemuArgs :: { params, guest, hostSystem } -> [string]

    `guest` is `{ kernel, initrd, cmdline, storeImage ? null,
    diskBackingFile ? null, extraQemuArgs ? [ ] }`.
  */
  qemuArgs =
    {
      params,
      guest,
      hostSystem ? "x86_64-linux",
    }:
    let
      arch =
        archs.${hostSystem} or (throw "agent-vm: unsupported system ${hostSystem}");
      p = statePaths params.stateDir;
      virtiofs = params.share == "virtiofs";
      ws = params.workspace;
      storeImage = guest.storeImage or null;
      netdev = qemuOpts "user" (
        [
          {
            name = "id";
            value = "net0";
          }
        ]
        ++ (
          if params.network == "none" then
            [
              {
                name = "restrict";
                value = "on";
              }
            ]
          else
            [ ]
        )
      );
    in
    [
      "-name"
      params.name
      "-nodefaults"
      "-no-user-config"
      "-display"
      "none"
      "-machine"
      (qemuOpts arch.machine (
        if virtiofs then
          [
            {
              name = "memory-backend";
              value = "mem";
            }
          ]
        else
          [ ]
      ))
      "-cpu"
      "max"
      "-m"
      "${toString params.memoryMiB}M"
      "-smp"
      (toString params.cores)
      "-kernel"
      (toString guest.kernel)
      "-initrd"
      (toString guest.initrd)
      "-append"
      "console=${arch.console} ${guest.cmdline}"
      "-pidfile"
      p.pidFile
      "-qmp"
      (qemuOpts "unix:${strings.escapeQemuOpt p.qmpSocket}" [
        {
          name = "server";
          value = "on";
        }
        {
          name = "wait";
          value = "off";
        }
      ])
      "-chardev"
      (qemuOpts "socket" [
        {
          name = "id";
          value = "console";
        }
        {
          name = "path";
          value = p.consoleSocket;
        }
        {
          name = "server";
          value = "on";
        }
        {
          name = "wait";
          value = "off";
        }
        {
          name = "logfile";
          value = p.serialLog;
        }
        {
          name = "logappend";
          value = "on";
        }
      ])
      "-serial"
      "chardev:console"
      "-device"
      "virtio-rng-pci"
      "-netdev"
      (builtins.concatStringsSep "," ([ netdev ] ++ forwards params))
      "-device"
      "virtio-net-pci,netdev=net0"
    ]
    ++ (
      if storeImage != null then
        [
          "-drive"
          (qemuOpts "" [
            {
              name = "id";
              value = "store";
            }
            {
              name = "file";
              value = toString storeImage;
            }
            {
              name = "if";
              value = "none";
            }
            {
              name = "format";
              value = "raw";
            }
            {
              name = "readonly";
              value = "on";
            }
          ])
          "-device"
          "virtio-blk-pci,drive=store,serial=agent-vm-store"
        ]
      else
        [ ]
    )
    ++ [
      "-drive"
      (qemuOpts "" [
        {
          name = "id";
          value = "disk";
        }
        {
          name = "file";
          value = p.disk;
        }
        {
          name = "if";
          value = "none";
        }
        {
          name = "format";
          value = "qcow2";
        }
        {
          name = "discard";
          value = "unmap";
        }
      ])
      "-device"
      "virtio-blk-pci,drive=disk,serial=agent-vm-disk"
    ]
    ++ (
      if virtiofs then
        [
          "-object"
          "memory-backend-memfd,id=mem,size=${toString params.memoryMiB}M,share=on"
          "-chardev"
          (qemuOpts "socket" [
            {
              name = "id";
              value = "workspace";
            }
            {
              name = "path";
              value = p.virtiofsSocket;
            }
          ])
          "-device"
          (qemuOpts "vhost-user-fs-pci" [
            {
              name = "chardev";
              value = "workspace";
            }
            {
              name = "tag";
              value = ws.tag;
            }
          ])
        ]
      else
        [
          "-fsdev"
          (qemuOpts "local" [
            {
              name = "id";
              value = "workspace";
            }
            {
              name = "path";
              value = ws.hostPath;
            }
            {
              name = "security_model";
              value = ws.securityModel;
            }
          ])
          "-device"
          (qemuOpts "virtio-9p-pci" [
            {
              name = "fsdev";
              value = "workspace";
            }
            {
              name = "mount_tag";
              value = ws.tag;
            }
          ])
        ]
    )
    ++ [
      "-fw_cfg"
      (qemuOpts "" [
        {
          name = "name";
          value = "opt/io.systemd.credentials/agent-vm.ssh-host-key";
        }
        {
          name = "file";
          value = p.hostKey;
        }
      ])
      "-fw_cfg"
      (qemuOpts "" [
        {
          name = "name";
          value = "opt/io.systemd.credentials/agent-vm.authorized-keys";
        }
        {
          name = "file";
          value = p.authorizedKeys;
        }
      ])
    ]
    ++ (guest.extraQemuArgs or [ ]);
}
