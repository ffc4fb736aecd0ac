# The host module: a VM declared in the NixOS configuration starts at boot
# under systemd, comes back after its QEMU is killed, and powers down
# cleanly (ACPI) when its unit stops.
{
  pkgs,
  self,
  common,
}:
pkgs.testers.runNixOSTest {
  name = "agent-vm-host-module";

  nodes.machine =
    { pkgs, ... }:
    {
      imports = [
        (common.machine {
          guests = [
            {
              uid = 400;
              gid = 400;
            }
          ];
        })
      ];
      # The service user's ids, fixed so its guest could be prebuilt.
      users.users.agent-vm.uid = 400;
      users.groups.agent-vm.gid = 400;

      services.agent-vm.vms.demo = {
        repository = "/srv/repo";
        branch = "main";
        sshPort = 2222;
        agentPort = 8000;
        memory = 1024;
        readyTimeout = 900;
      };

      # The repository is root's: the unit's user only reads it.
      systemd.services.make-repo = {
        wantedBy = [ "multi-user.target" ];
        requiredBy = [ "agent-vm-demo.service" ];
        before = [ "agent-vm-demo.service" ];
        path = [ pkgs.git ];
        serviceConfig.Type = "oneshot";
        script = ''
          if [ ! -d /srv/repo ]; then
            git init -q -b main /srv/repo
            git -C /srv/repo -c user.name=a -c user.email=a@b commit -q --allow-empty -m init
            chmod -R a+rX /srv/repo
          fi
        '';
      };
    };

  testScript = ''
    machine.wait_for_unit("agent-vm-demo.service", timeout=1800)

    with subtest("the declared VM is up at boot and answers"):
        token = machine.succeed("cat /var/lib/agent-vm/agent-vm/vms/*/secrets/agent-token").strip()
        machine.succeed(f"curl -fsS -H 'Authorization: Bearer {token}' http://127.0.0.1:8000/status")
        machine.succeed("test \"$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8000/status)\" = 401")
        machine.succeed("pgrep -u agent-vm -f qemu-system")

    with subtest("a killed QEMU is restarted by systemd"):
        machine.succeed("pkill -KILL -u agent-vm -f qemu-system")
        machine.wait_until_succeeds(
            "test \"$(systemctl show -P NRestarts agent-vm-demo.service)\" -ge 1", timeout=300
        )
        machine.wait_for_unit("agent-vm-demo.service", timeout=1800)
        machine.wait_until_succeeds(
            f"curl -fsS -H 'Authorization: Bearer {token}' http://127.0.0.1:8000/status", timeout=900
        )

    with subtest("stopping the unit powers the guest down"):
        machine.succeed("systemctl stop agent-vm-demo.service")
        machine.fail("pgrep -f qemu-system")
        machine.succeed("grep -q 'reboot: Power down' /var/lib/agent-vm/agent-vm/vms/*/serial.log")
  '';
}
