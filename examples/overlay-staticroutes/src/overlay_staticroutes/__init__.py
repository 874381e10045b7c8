"""The ``staticroutes`` backend: a route to each peer's subnet via the next hop the peer advertises.

Each node puts the address its neighbours should route through in its lease's ``BackendData``
(``{"NextHop": "192.0.2.11"}``): by default the external interface's own address, so nodes whose
public IP is a NAT address (which host-gw refuses) still route to each other over their shared
segment. A peer whose next hop is missing, malformed or off this node's segment is skipped with
the reason. IPv4 only.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from ipaddress import IPv4Address

from overlay_core import Capabilities, ConfigError, KernelBackend, LeaseRequest, PeerPlan, PeerStatus, hookimpl
from overlay_core.dataplane import Route
from overlay_core.options import option, read_options

__version__ = "0.1.0"


@dataclass(frozen=True)
class StaticRoutesOptions:
    """``NextHopFrom``: which of its addresses a node advertises as its next hop."""

    next_hop_from: str = option("NextHopFrom", "interface", choices=("interface", "public"))


def next_hop_of(data: object) -> IPv4Address | None:
    """The ``NextHop`` of a peer's ``BackendData``, None when absent or not an IPv4 address."""
    if not isinstance(data, dict) or not isinstance(data.get("NextHop"), str):
        return None
    try:
        address = ipaddress.ip_address(data["NextHop"])
    except ValueError:
        return None
    return address if isinstance(address, IPv4Address) else None


class StaticRoutesBackend(KernelBackend):
    type = "staticroutes"
    option_names = ("NextHopFrom",)
    capabilities = Capabilities()

    @classmethod
    def parse_options(cls, config) -> StaticRoutesOptions:
        if config.ipv6 is not None:
            raise ConfigError("staticroutes routes IPv4 only: remove EnableIPv6/IPv6Network, or use host-gw")
        return read_options(StaticRoutesOptions, config, backend=cls.type)

    def own_next_hop(self, node) -> IPv4Address:
        iface = node.iface
        address = iface.address if self.options.next_hop_from == "interface" else iface.public_ip
        if address is None:
            raise ConfigError(f"staticroutes: {iface.name} has no IPv4 {self.options.next_hop_from} address "
                              "to advertise as next hop")
        return address

    @hookimpl
    def overlay_lease_request(self, node) -> LeaseRequest:
        return LeaseRequest(self.type, node.iface.mtu, {"NextHop": str(self.own_next_hop(node))})

    def plan(self, peer) -> PeerPlan:
        if peer.subnet is None:
            return PeerPlan("skipped", (), "its lease has no IPv4 subnet")
        via = next_hop_of(peer.attrs.backend_data)
        if via is None:
            return PeerPlan("skipped", (), "its lease's BackendData has no IPv4 NextHop")
        if not self.node.iface.onlink(via):
            return PeerPlan("skipped", (), f"next hop {via} is not on {self.node.iface.name}'s segment")
        return PeerPlan("routed", (Route(peer.subnet, via, self.node.iface.index),), f"via {via}")

    @hookimpl
    def overlay_peer_status(self) -> dict[str, PeerStatus]:
        statuses = super().overlay_peer_status()
        for status in statuses.values():
            reason = status.detail.pop("reason", "")
            if reason.startswith("via "):
                status.detail["next_hop"] = reason.removeprefix("via ")
            elif reason:
                status.detail["reason"] = reason
        return statuses
