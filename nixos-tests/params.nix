# The parameters file the CLI would write, for the VMs the checks make
# themselves (see docs/contract.md).
{
  name,
  stateDir,
  user,
  share,
  network ? "open",
}:
{
  version = 2;
  inherit
    name
    stateDir
    share
    network
    ;
  hostAddress = "127.0.0.1";
  sshPort = 2222;
  agentPort = 8000;
  guestAgentPort = 8000;
  memoryMiB = 1024;
  cores = 2;
  diskSizeMiB = 1024;
  workspace = {
    hostPath = "${stateDir}/workspace";
    tag = "workspace";
    mountPoint = "/workspace";
    securityModel = "none";
  };
  user = {
    name = "dev";
  }
  // user;
  userModule = null;
}
