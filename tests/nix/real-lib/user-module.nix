# A --config module that sets every agent-vm option a user may set (the
# README's table): each must evaluate without a conflict with what the CLI
# sets (lib/mk-branch-vm.nix).
{ pkgs, lib, ... }:
{
  agent-vm = {
    user.sudo = true;
    workspace.mountPoint = "/src";
    store.source = "host";
    store.writable = false;
    network.outbound = "none";
    console.autologin = false;
    egress.enable = false;
    agent = {
      enable = true;
      package = pkgs.mcp-proxy;
      port = 3000;
      servers.node = {
        enable = true;
        command = lib.getExe pkgs.nodejs;
        args = [ "server.js" ];
        env.LOG_LEVEL = "info";
      };
      backendPort = 9000;
      user = "mcp";
      environmentFile = "/run/secrets/agent-vm-mcp.env";
      path = [
        pkgs.git
        pkgs.nodejs
      ];
      extraArgs = [ "--debug" ];
    };
  };
}
