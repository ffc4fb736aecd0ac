# The egress proxy of a `network = "allow"` VM, on the Nix side: QEMU's
# netdev options (restrict=on plus the one guestfwd), the fw_cfg files the
# guest gets (the proxy's CA certificate, the proxy environment), and the
# runner lines that start the engine before QEMU. Pure: evaluated and
# asserted by tests/nix. The files are named in agent_vm/egress/layout.py
# too; the tests check the two agree.
{ strings }:
let
  inherit (strings) escapeShellArg;
  opt = name: value: { inherit name value; };
in
rec {
  /**
    The guest's side of the one way out: the address and port QEMU's
    guestfwd listens on inside the guest, which the guest uses as its
    HTTP(S) proxy.
  */
  guestAddress = "10.0.2.100";
  guestPort = 3128;

  /**
    The fw_cfg credential names (systemd caps them at 28 characters).
  */
  credentials = {
    ca = "agent-vm.egress-ca";
    env = "agent-vm.egress-env";
  };

  /**
    The engine's unix socket, relative to the state directory (the runner's
    and QEMU's working directory: a socket path holds at most 107 bytes).
  */
  socket = "egress/proxy.sock";

  /**
    Files in the state directory: the CA certificate the engine makes on
    its first start (its key stays beside it, 0600), the guest's
    environment (written by the CLI at start), the engine's log.

    Type: files :: string -> attrset
  */
  files = stateDir: {
    caCert = "${stateDir}/egress/mitmproxy/mitmproxy-ca-cert.pem";
    guestEnv = "${stateDir}/egress/guest.env";
    engineLog = "egress/engine.log";
  };

  /**
    The command QEMU runs for each guest connection to the proxy address:
    it connects the connection (its stdin/stdout, one socket) to the
    engine's socket. `FD:0,shut-down` passes an end of data on as a
    half-close at once (STDIO would hold the connection open for socat's
    0.5 s linger). It holds no secret (it is on QEMU's command line, which
    every local user can read).

    Type: relayCommand :: string -> string
  */
  relayCommand = relay: "${relay} FD:0,shut-down UNIX-CONNECT:${socket}";

  /**
    The user netdev's options for the `allow` mode: nothing leaves
    (restrict=on) but the one forward to the relay.

    Type: netdevOpts :: { relay } -> [{ name; value; }]
  */
  netdevOpts =
    { relay }:
    [
      (opt "restrict" "on")
      (opt "guestfwd" "tcp:${guestAddress}:${toString guestPort}-cmd:${relayCommand relay}")
    ];

  /**
    The guest's fw_cfg credentials for the `allow` mode.

    Type: fwCfgArgs :: string -> [string]
  */
  fwCfgArgs =
    stateDir:
    let
      f = files stateDir;
    in
    [
      "-fw_cfg"
      (strings.qemuOpts "" [
        (opt "name" "opt/io.systemd.credentials/${credentials.ca}")
        (opt "file" f.caCert)
      ])
      "-fw_cfg"
      (strings.qemuOpts "" [
        (opt "name" "opt/io.systemd.credentials/${credentials.env}")
        (opt "file" f.guestEnv)
      ])
    ];

  /**
    Runner lines (POSIX sh, in the state directory) that start the engine
    and wait for its socket; QEMU starts only once it listens, so its CA
    certificate exists for fw_cfg. The engine exits when its parent does:
    QEMU after the runner's exec, or the runner itself (named by its pid,
    so a runner killed while the engine starts is noticed too).

    Type: startEngine :: { engine, stateDir } -> string
  */
  startEngine =
    { engine, stateDir }:
    ''
      # The egress proxy: the guest's only way out (guestfwd -> relay -> socket).
      rm -f ${socket}
      AGENT_VM_EGRESS_PARENT=$$ ${escapeShellArg engine} ${escapeShellArg stateDir} >>${(files stateDir).engineLog} 2>&1 &
      egress_pid=$!
      egress_wait=0
      while [ ! -S ${socket} ]; do
        egress_wait=$((egress_wait + 1))
        if [ "$egress_wait" -gt 600 ] || ! kill -0 "$egress_pid" 2>/dev/null; then
          echo "run-agent-vm: the egress proxy did not start (see ${(files stateDir).engineLog})" >&2
          kill "$egress_pid" 2>/dev/null || true
          exit 1
        fi
        sleep 0.05
      done
    '';
}
