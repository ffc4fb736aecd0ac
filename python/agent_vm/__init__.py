"""agent-vm: per-branch NixOS virtual machines for AI coding agents."""

__version__ = "0.1.0"
