"""Lab extras for ``overlay-core lab up --backend extension`` (entry point group ``overlay.lab``).

By default the lab's network config builds a host-gw out of shell commands, after the host-gw
example of Flannel's extension docs: one route per peer subnet via the peer's public IP. The
agents run in the nodes' namespaces, and so do their commands. ``--option`` replaces either
command (or adds the start-up ones).

One word differs from the docs: the add command is ``ip route replace``, not ``ip route add``.
After an agent restart every peer's add command runs again (nothing tells the agent what a
script did before), and the docs' ``add`` then fails with "File exists" for every route, which
this backend retries at every reconcile. ``replace`` gives the same route and is idempotent.
The docs' example itself runs word for word in tests/test_extension_e2e.py.
"""

from __future__ import annotations

#: Flannel's Documentation/extension.md "Simple example (host-gw)", word for word.
FLANNEL_HOSTGW_EXAMPLE = {
    "SubnetAddCommand": 'ip route add "$SUBNET" via "$PUBLIC_IP"',
    "SubnetRemoveCommand": 'ip route del "$SUBNET" via "$PUBLIC_IP"',
}
#: What the lab runs: the same, with an add command that can run twice.
LAB_COMMANDS = {**FLANNEL_HOSTGW_EXAMPLE, "SubnetAddCommand": 'ip route replace "$SUBNET" via "$PUBLIC_IP"'}


def check(lab, nodes: int, remote_nodes: int, ipv6: str) -> str | None:
    if remote_nodes:
        return ("the lab's default commands build a host-gw (routes via peers' public IPs), which needs every "
                "node on one segment: drop --remote-nodes")
    if ipv6:
        return "the lab's default commands (after Flannel's host-gw example) route IPv4 subnets only: drop --ipv6"
    return None


def backend_options(lab) -> dict:
    return dict(LAB_COMMANDS)
