"""Lab extras of the udp backend (entry point group ``overlay.lab``): only a layout check.

Nothing else is needed: the agent starts the forwarder itself, in the node's namespace, and
``lab down`` removes the namespaces with the forwarders in them.
"""

from __future__ import annotations


def check(lab, nodes: int, remote_nodes: int, ipv6: str) -> str | None:
    """udp carries IPv4 only, as Flannel's udp backend."""
    if ipv6:
        return "udp carries IPv4 only (as Flannel's udp backend); leave out --ipv6"
    return None
