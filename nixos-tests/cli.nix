# The CLI inside a NixOS machine, as an ordinary user, for a git repository:
# create → start → shell → a second branch at once (up) → stop → destroy, with the guest
# checked from inside (sshd, agent service, workspace owner) and from the
# host side (file ownership, the agent port, ports that differ).
{
  pkgs,
  self,
  common,
}:
pkgs.testers.runNixOSTest {
  name = "agent-vm-cli";

  nodes.machine =
    { ... }:
    {
      imports = [
        (common.machine {
          # alice: a normal NixOS user, uid 1000 in group users (100).
          guests = [
            {
              uid = 1000;
              gid = 100;
            }
          ];
        })
      ];
      users.users.alice = {
        isNormalUser = true;
        uid = 1000;
      };
      programs.agent-vm.users = [ "alice" ];
    };

  testScript = ''
    import json
    import shlex

    def alice(cmd, timeout=1200):
        return machine.succeed(f"su - alice -c {shlex.quote(cmd)}", timeout=timeout)

    def alice_fails(cmd):
        return machine.fail(f"su - alice -c {shlex.quote(cmd)}")

    machine.wait_for_unit("multi-user.target")
    alice(
        "git init -q -b main repo && cd repo"
        " && git -c user.name=a -c user.email=a@b commit -q --allow-empty -m init"
        " && echo hello > README && git add README"
        " && git -c user.name=a -c user.email=a@b commit -q -m readme"
    )

    with subtest("create, then start: a VM for the current branch"):
        created = json.loads(alice("cd repo && agent-vm create --memory 1024 --json"))
        assert created["state"] == "stopped", created
        main = json.loads(alice("cd repo && agent-vm --timeout 900 start --json"))
        assert main["state"] == "running" and main["agent_port"] == created["agent_port"], main

    with subtest("inside the guest: user, services, workspace"):
        out = alice(
            "cd repo && agent-vm shell -- sh -c '"
            "id -un; id -u; id -g; stat -c %u /workspace/README;"
            " systemctl is-active sshd.service agent-vm-agent.service;"
            " findmnt -n -o FSTYPE /workspace; findmnt -n -o FSTYPE /nix/.ro-store;"
            " echo from-guest > /workspace/from-guest'"
        ).split()
        assert out == ["dev", "1000", "100", "1000", "active", "active", "virtiofs", "erofs"], out

    with subtest("host side: the guest's file is alice's, the agent answers"):
        machine.succeed(
            "test \"$(stat -c %U:%G /home/alice/.local/state/agent-vm/vms/*/workspace/from-guest)\" = alice:users"
        )
        header = json.loads(alice("cd repo && agent-vm mcp-config --json"))["servers"][0]["headers"]["Authorization"]
        status = json.loads(machine.succeed(
            f"curl -fsS -H '{'Authorization: ' + header}' http://127.0.0.1:{main['agent_port']}/status"
        ))
        assert "workspace" in status["server_instances"], status
        alice("cd repo && agent-vm status --json | jq -e '.agent_reachable and .ssh_reachable'")

    with subtest("a second branch runs beside the first, on other ports"):
        alice("cd repo && git switch -q -c feature && agent-vm --timeout 900 up --memory 1024")
        vms = json.loads(alice("agent-vm list --json"))["vms"]
        assert len(vms) == 2 and all(v["state"] == "running" for v in vms), vms
        ports = {p for v in vms for p in (v["ssh_port"], v["agent_port"])}
        assert len(ports) == 4, vms
        alice("cd repo && agent-vm shell -- test -e /workspace/README")

    with subtest("stop, then destroy refuses unsaved work without --force"):
        alice("cd repo && agent-vm stop && agent-vm stop main")
        machine.fail("pgrep -f qemu-system")
        alice_fails("cd repo && agent-vm destroy main")  # from-guest is untracked
        alice("cd repo && agent-vm destroy --force main && agent-vm destroy feature")
        assert json.loads(alice("agent-vm list --json"))["vms"] == []
  '';
}
