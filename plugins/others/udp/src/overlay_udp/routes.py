"""The forwarder's route table: peer subnet -> peer public IP, immutable.

All Flannel subnets of a network have the same prefix length, so a lookup is one mask and one
dict access on the destination address. Writers build a new table and replace the reference;
packet threads read the reference once per batch and never take a lock (a reference assignment
is atomic in CPython).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from ipaddress import IPv4Address, IPv4Network
from types import MappingProxyType


class RouteTable:
    """Immutable mapping of IPv4 subnets (one prefix length) to ``(peer ip, port)`` socket addresses."""

    __slots__ = ("port", "prefixlen", "mask", "_by_net", "_subnets")

    def __init__(self, routes: Mapping[IPv4Network, IPv4Address] | Iterable[tuple[IPv4Network, IPv4Address]] = (),
                 port: int = 8285) -> None:
        items = dict(routes.items() if isinstance(routes, Mapping) else routes)
        lengths = {net.prefixlen for net in items}
        if len(lengths) > 1:
            raise ValueError(f"all routed subnets must have one prefix length, got /{', /'.join(map(str, lengths))}")
        self.port = port
        self.prefixlen = lengths.pop() if lengths else 32
        self.mask = (0xFFFFFFFF << (32 - self.prefixlen)) & 0xFFFFFFFF
        self._subnets = MappingProxyType({IPv4Network(n): IPv4Address(p) for n, p in items.items()})
        self._by_net = {int(net.network_address): (str(peer), port) for net, peer in self._subnets.items()}

    def lookup(self, packet) -> tuple[str, int] | None:
        """The socket address for the destination of the IPv4 ``packet``, or None."""
        return self._by_net.get(int.from_bytes(packet[16:20], "big") & self.mask)

    def with_route(self, subnet: IPv4Network, peer: IPv4Address) -> RouteTable:
        """A new table where ``subnet`` goes to ``peer`` (added or changed)."""
        return RouteTable({**self._subnets, IPv4Network(subnet): IPv4Address(peer)}, self.port)

    def without_route(self, subnet: IPv4Network) -> RouteTable:
        """A new table without ``subnet`` (unchanged when absent)."""
        return RouteTable({n: p for n, p in self._subnets.items() if n != IPv4Network(subnet)}, self.port)

    def as_json(self) -> dict[str, str]:
        return {str(n): str(p) for n, p in sorted(self._subnets.items())}

    @classmethod
    def from_json(cls, data: Mapping[str, str], port: int) -> RouteTable:
        return cls({IPv4Network(n): IPv4Address(p) for n, p in data.items()}, port)

    def __len__(self) -> int:
        return len(self._subnets)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RouteTable) and (self.port, dict(self._subnets)) == (other.port, dict(other._subnets))

    def __hash__(self) -> int:
        return hash((self.port, frozenset(self._subnets.items())))

    def __repr__(self) -> str:
        return f"RouteTable({self.as_json()}, port={self.port})"
