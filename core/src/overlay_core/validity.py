"""Which peer leases may be programmed at all.

A peer lease becomes kernel state on every node, so whoever can write one key under
``subnets/`` must not be able to cut a node off its underlay or steal traffic. A lease is
programmed only when it is a subnet the network config could have handed out: inside the
Network, of SubnetLen, not overlapping this node's own subnet, another programmed peer's or any
network configured on this node's interfaces, and with a public IP outside the pod network.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network

from .cidr import overlap, within
from .config import NetworkConfig
from .lease import Lease

Network = IPv4Network | IPv6Network


@dataclass(frozen=True)
class Rejection:
    """Why a lease is not programmed: ``code`` labels the metric, ``reason`` is for people."""

    code: str
    reason: str


@dataclass(frozen=True)
class LeaseRules:
    """The facts a lease is judged against: the config, our own subnets, and the networks
    configured on this node's interfaces (each with the interface's name). ``former``: subnets
    this node held before (its pod bridge may still carry their addresses until the CNI plugin
    re-addresses it); those leftovers are ours, not a network a peer must stay off."""

    config: NetworkConfig
    own: tuple[Network, ...] = ()
    local: tuple[tuple[Network, str], ...] = ()
    former: tuple[Network, ...] = ()

    def subnets(self, lease: Lease) -> list[Network]:
        """The lease's subnets of the enabled families."""
        found: list[Network] = []
        if self.config.ipv4 is not None and lease.subnet is not None:
            found.append(lease.subnet)
        if self.config.ipv6 is not None and lease.ipv6_subnet is not None:
            found.append(lease.ipv6_subnet)
        return found

    def check(self, lease: Lease) -> Rejection | None:
        """The first reason ``lease`` must not be programmed, judged on its own."""
        subnets = self.subnets(lease)
        if not subnets:
            return Rejection("no-subnet", "it has no subnet of an enabled address family")
        for subnet in subnets:
            rng = self.config.ipv4 if subnet.version == 4 else self.config.ipv6
            assert rng is not None
            if not within(subnet, rng.network):
                return Rejection("outside-network", f"{subnet} is outside the network {rng.network}")
            if subnet.prefixlen != rng.subnet_len:
                return Rejection("wrong-length", f"{subnet} is not a /{rng.subnet_len} subnet of {rng.network}")
            for own in self.own:
                if overlap(subnet, own):
                    return Rejection("own-subnet", f"{subnet} overlaps this node's own subnet {own}")
            for net, device in self.local:
                if overlap(subnet, net) and not any(overlap(net, mine) for mine in (*self.own, *self.former)):
                    return Rejection("local-network", f"{subnet} overlaps {net} configured on {device}")
        for ip, net in ((lease.attrs.public_ip, self.config.network),
                        (lease.attrs.public_ipv6, self.config.ipv6_network)):
            if ip is not None and net is not None and ip in net:
                return Rejection("public-ip-in-network", f"its public IP {ip} is inside the pod network {net}")
        return None


def local_networks(links: Iterable) -> tuple[tuple[Network, str], ...]:
    """Networks of the global addresses on ``links`` (``iface.Link`` values), with link names."""
    out = []
    for link in links:
        for addr in link.addrs:
            ip = addr.ip
            if ip.is_link_local or ip.is_loopback or ip.is_unspecified or ip.is_multicast:
                continue
            out.append((addr.network, link.name))
    return tuple(out)
