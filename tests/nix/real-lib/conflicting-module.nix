# A --config module that sets an option the CLI owns: evaluation must fail
# with a conflict that names where the CLI's value comes from.
{ ... }:
{
  agent-vm.user.uid = 4242;
}
