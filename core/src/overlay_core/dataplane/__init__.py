"""Kernel programming shared by every backend: netlink and the firewall."""
