"""Lab extras for ``overlay-core lab up --backend extension`` (entry point group ``overlay.lab``).

By default the lab's network config carries the host-gw example of Flannel's extension docs:
one route per peer subnet via the peer's public IP, added and deleted by ``ip`` in a shell.
The agents run in the nodes' namespaces, so do their commands. ``--option`` replaces either
command (or adds the start-up ones).
"""

from __future__ import annotations

#: Flannel's Documentation/extension.md "Simple example (host-gw)", word for word.
HOSTGW_EXAMPLE = {
    "SubnetAddCommand": 'ip route add "$SUBNET" via "$PUBLIC_IP"',
    "SubnetRemoveCommand": 'ip route del "$SUBNET" via "$PUBLIC_IP"',
}


def check(lab, nodes: int, remote_nodes: int, ipv6: str) -> str | None:
    if remote_nodes:
        return ("the lab's default commands build a host-gw (routes via peers' public IPs), which needs every "
                "node on one segment: drop --remote-nodes")
    if ipv6:
        return "the lab's default commands (Flannel's host-gw example) route IPv4 subnets only: drop --ipv6"
    return None


def backend_options(lab) -> dict:
    return dict(HOSTGW_EXAMPLE)
