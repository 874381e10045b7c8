"""CIDR block relations without ``ipaddress``'s cached properties.

``IPv4Network.overlaps`` and ``subnet_of`` compute the broadcast address, which ``ipaddress``
caches in a dict it adds to the network object: about 150 bytes for every peer subnet ever
compared. CIDR blocks either nest or are disjoint, so first addresses and prefix lengths decide.
"""

from __future__ import annotations

from ipaddress import IPv4Network, IPv6Network

Network = IPv4Network | IPv6Network


def overlap(a: Network, b: Network) -> bool:
    """Whether ``a`` and ``b`` share an address: one of them holds the other's first address."""
    return a.version == b.version and (a.network_address in b or b.network_address in a)


def within(a: Network, b: Network) -> bool:
    """Whether ``a`` lies inside ``b`` (or is ``b``)."""
    return a.version == b.version and a.prefixlen >= b.prefixlen and a.network_address in b
