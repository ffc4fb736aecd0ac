"""Loaded by mitmproxy (`--scripts`): the agent-vm egress addon."""

from agent_vm.egress.addon import EgressAddon

addons = [EgressAddon()]
