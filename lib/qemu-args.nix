# The QEMU command line of a branch VM, as a list of arguments. Pure: it
# needs only builtins, so tests evaluate it with `nix-instantiate --eval`
# and assert on every flag that matters for safety (forwards bound to the
# chosen host address, restrict=on, the share's security model).
{
  strings,
  egress,
  agent,
}:
let
  inherit (strings) qemuOpts;
  egressLib = egress;

  # One `key=value` of a QEMU option list (see strings.qemuOpts).
  opt = name: value: { inherit name value; };

  # The fw_cfg names of the VM's systemd credentials. systemd caps a
  # credential name handed in this way at 28 characters.
  credentials = {
    sshHostKey = "agent-vm.ssh-host-key";
    authorizedKeys = "agent-vm.authorized-keys";
    # The agent port's bearer token (the guest's reverse proxy checks it).
    agentToken = "agent-vm.agent-token";
    # NAME=value lines for the MCP servers, readable only by their unit.
    mcpSecrets = "agent-vm.mcp-secrets";
  };

  # virtiofsd's socket for a share, relative to the state directory.
  virtiofsSocket = tag: "virtiofs-${tag}.sock";

  # vhost-user-fs: virtiofsd (started by the runner) serves the directory
  # on a socket named after the tag.
  virtiofsDevice = share: [
    "-chardev"
    (qemuOpts "socket" [
      (opt "id" "fs-${share.tag}")
      (opt "path" (virtiofsSocket share.tag))
    ])
    "-device"
    (qemuOpts "vhost-user-fs-pci" [
      (opt "chardev" "fs-${share.tag}")
      (opt "tag" share.tag)
    ])
  ];

  # 9p: QEMU serves the directory itself.
  ninePDevice = share: [
    "-fsdev"
    (qemuOpts "local" [
      (opt "id" "fs-${share.tag}")
      (opt "path" share.hostPath)
      (opt "security_model" share.securityModel)
      (opt "readonly" (if share.readOnly then "on" else null))
    ])
    "-device"
    (qemuOpts "virtio-9p-pci" [
      (opt "fsdev" "fs-${share.tag}")
      (opt "mount_tag" share.tag)
    ])
  ];

  # Only the devices a branch VM uses: q35's SATA controller, SMBus, VMware
  # port and PS/2 controller are each a driver the guest probes at boot (slow
  # under TCG: 8 s of a Debian guest's 44) and emulated hardware a hostile
  # guest could poke at.
  archs = {
    x86_64-linux = {
      machine = "q35";
      machineOpts = [
        (opt "sata" "off")
        (opt "smbus" "off")
        (opt "vmport" "off")
        (opt "i8042" "off")
      ];
      console = "ttyS0";
    };
    aarch64-linux = {
      machine = "virt";
      # virt defaults to GICv2, which KVM cannot provide on GICv3-only hosts
      # (most current ones); max is the newest the host (or TCG) has.
      # nixpkgs' nixos/lib/qemu-common.nix sets it for the same reason.
      machineOpts = [ (opt "gic-version" "max") ];
      console = "ttyAMA0";
    };
  };
  # The virtio-serial port name the QEMU guest agent opens in the guest.
  guestAgentChannel = "org.qemu.guest_agent.0";
in
rec {
  inherit virtiofsSocket credentials guestAgentChannel;

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
    workspaceDisk = "${stateDir}/workspace.qcow2";
    memoryFile = "${stateDir}/memory.ram";
    guestAgentSocket = "qga.sock";
    pidFile = "${stateDir}/qemu.pid";
    qmpSocket = "qmp.sock";
    consoleSocket = "console.sock";
    serialLog = "${stateDir}/serial.log";
    hostKey = "${stateDir}/ssh/ssh_host_ed25519_key";
    authorizedKeys = "${stateDir}/ssh/id_ed25519.pub";
    agentToken = "${stateDir}/secrets/agent-token";
    mcpSecrets = "${stateDir}/secrets/mcp.env";
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
    Where the workspace lives: `share` (a host directory shared into the
    guest) or `disk` (a disk of the VM's own, made by the CLI at create).
    Parameters files from before the setting existed mean `share`.

    Type: workspaceMode :: attrset -> string
  */
  workspaceMode = params: params.workspaceMode or "share";

  /**
    The directories shared into the guest: the workspace (unless it is a
    disk of its own), and the host's Nix store (read-only) when the guest
    asks for it instead of a store image (`guest.hostStore`).

    Type: shares :: { params, guest } -> [{ tag, hostPath, readOnly, securityModel }]
  */
  shares =
    { params, guest }:
    (
      if workspaceMode params == "share" then
        [
          {
            inherit (params.workspace) tag hostPath;
            readOnly = false;
            securityModel = params.workspace.securityModel or "none";
          }
        ]
      else
        [ ]
    )
    ++ (
      if guest.hostStore or false then
        [
          {
            tag = "nix-store";
            hostPath = builtins.storeDir;
            readOnly = true;
            # Host ownership shows through unchanged; the guest cannot write.
            securityModel = "none";
          }
        ]
      else
        [ ]
    );

  /**
    The arguments of the KVM probe (`run-agent-vm --kvm-probe`, before its
    `-accel kvm`): the VM's own kernel on the VM's machine and CPU, with no
    initrd, disk or network, so it panics as soon as it looks for a root
    file system; `-no-reboot` then ends QEMU. Its console is on stdout: a
    host where Linux runs under KVM prints the kernel's boot and the panic
    within a second or two, one where it does not prints nothing.

    Type: kvmProbeArgs :: { guest, hostSystem } -> [string]
  */
  kvmProbeArgs =
    {
      guest,
      hostSystem ? "x86_64-linux",
    }:
    let
      arch =
        archs.${hostSystem} or (throw "agent-vm: unsupported system ${hostSystem}");
    in
    [
      "-nodefaults"
      "-no-user-config"
      "-display"
      "none"
      "-no-reboot"
      "-machine"
      (qemuOpts arch.machine arch.machineOpts)
      "-cpu"
      "max"
      "-m"
      "256M"
      "-smp"
      "1"
      "-kernel"
      (toString guest.kernel)
      "-append"
      "console=${arch.console} panic=-1"
      "-serial"
      "stdio"
    ];

  /**
    The full argument list (without the program name and without the
    accelerator, which the runner picks at run time).

    Type: qemuArgs :: { params, guest, hostSystem } -> [string]

    `guest` is `{ kernel, initrd, cmdline, storeImage ? null,
    hostStore ? false, diskBackingFile ? null, rootFormat ? null,
    extraQemuArgs ? [ ] }`. `egress` is `{ relay, engine }` (program
    paths), needed for `params.network = "allow"` (lib/egress.nix).
  */
  qemuArgs =
    {
      params,
      guest,
      hostSystem ? "x86_64-linux",
      egress ? null,
    }:
    let
      arch =
        archs.${hostSystem} or (throw "agent-vm: unsupported system ${hostSystem}");
      p = statePaths params.stateDir;
      virtiofs = params.share == "virtiofs";
      storeImage = guest.storeImage or null;
      allow = params.network == "allow";
      egressPrograms =
        if egress == null then
          throw "agent-vm: network = \"allow\" needs egress.relay and egress.engine"
        else
          egress;
      netdev = qemuOpts "user" (
        [ (opt "id" "net0") ]
        ++ (
          if params.network == "none" then
            [ (opt "restrict" "on") ]
          else if allow then
            egressLib.netdevOpts { inherit (egressPrograms) relay; }
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
      (qemuOpts arch.machine (arch.machineOpts ++ [ (opt "memory-backend" "mem") ]))
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
      (builtins.concatStringsSep " " (
        [ "console=${arch.console}" guest.cmdline ] ++ agent.vmKernelParams params
      ))
      "-pidfile"
      p.pidFile
      "-qmp"
      (qemuOpts "unix:${strings.escapeQemuOpt p.qmpSocket}" [
        (opt "server" "on")
        (opt "wait" "off")
      ])
      "-chardev"
      (qemuOpts "socket" [
        (opt "id" "console")
        (opt "path" p.consoleSocket)
        (opt "server" "on")
        (opt "wait" "off")
        (opt "logfile" p.serialLog)
        # This boot's lines only: the CLI keeps the previous boot's log as
        # serial.log.1 (error messages quote this file's tail).
        (opt "logappend" "off")
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
            (opt "id" "store")
            (opt "file" (toString storeImage))
            (opt "if" "none")
            (opt "format" "raw")
            (opt "readonly" "on")
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
        (opt "id" "disk")
        (opt "file" p.disk)
        (opt "if" "none")
        (opt "format" "qcow2")
        (opt "discard" "unmap")
      ])
      "-device"
      "virtio-blk-pci,drive=disk,serial=agent-vm-disk"
    ]
    ++ (
      if workspaceMode params == "disk" then
        [
          "-drive"
          (qemuOpts "" [
            (opt "id" "workspace")
            (opt "file" p.workspaceDisk)
            (opt "if" "none")
            (opt "format" "qcow2")
            (opt "discard" "unmap")
          ])
          "-device"
          "virtio-blk-pci,drive=workspace,serial=agent-vm-workspace"
        ]
      else
        [ ]
    )
    # The QEMU guest agent's channel: after a resume the CLI sets the
    # guest's clock through it (the guest's clock stood still while the VM
    # was saved). Present at every boot: a saved VM resumes only into the
    # same devices.
    ++ [
      "-chardev"
      (qemuOpts "socket" [
        (opt "id" "qga")
        (opt "path" p.guestAgentSocket)
        (opt "server" "on")
        (opt "wait" "off")
      ])
      "-device"
      "virtio-serial-pci,id=serial0"
      "-device"
      (qemuOpts "virtserialport" [
        (opt "chardev" "qga")
        (opt "name" guestAgentChannel)
      ])
    ]
    # The guest's RAM is a shared mapping of a file in the VM dir: a suspend
    # then saves only device state (migration capability x-ignore-shared)
    # and a resume maps the same file again, in a fraction of a second
    # whatever the guest's memory in use (docs/benchmarks.md). Shared
    # memory is also what vhost-user (virtiofsd) needs.
    ++ [
      "-object"
      (qemuOpts "memory-backend-file" [
        (opt "id" "mem")
        (opt "size" "${toString params.memoryMiB}M")
        (opt "mem-path" p.memoryFile)
        (opt "share" "on")
      ])
    ]
    ++ builtins.concatMap (share: if virtiofs then virtiofsDevice share else ninePDevice share) (shares {
      inherit params guest;
    })
    ++ [
      "-fw_cfg"
      (qemuOpts "" [
        (opt "name" "opt/io.systemd.credentials/${credentials.sshHostKey}")
        (opt "file" p.hostKey)
      ])
      "-fw_cfg"
      (qemuOpts "" [
        (opt "name" "opt/io.systemd.credentials/${credentials.authorizedKeys}")
        (opt "file" p.authorizedKeys)
      ])
      "-fw_cfg"
      (qemuOpts "" [
        (opt "name" "opt/io.systemd.credentials/${credentials.agentToken}")
        (opt "file" p.agentToken)
      ])
      "-fw_cfg"
      (qemuOpts "" [
        (opt "name" "opt/io.systemd.credentials/${credentials.mcpSecrets}")
        (opt "file" p.mcpSecrets)
      ])
    ]
    ++ (if allow then egressLib.fwCfgArgs params.stateDir else [ ])
    ++ (guest.extraQemuArgs or [ ]);
}
