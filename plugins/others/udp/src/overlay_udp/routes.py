"""The forwarder's route table: peer subnet -> peer public IP, immutable.

All Flannel subnets of a network have the same prefix length, so a lookup is one mask and one
dict access on the destination address. Writers build a new table and replace the reference;
packet threads read the reference once per batch and never take a lock (a reference assignment
is atomic in CPython). A change copies the table's dicts and parses only the changed entries, so
one peer event in a network of 60 000 peers costs milliseconds, not a re-parse of every route.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from ipaddress import IPv4Address, IPv4Network
from types import MappingProxyType


class RouteTable:
    """Immutable mapping of IPv4 subnets (one prefix length) to ``(peer ip, port)`` socket addresses."""

    __slots__ = ("port", "prefixlen", "mask", "_by_net", "_subnets", "_json")

    def __init__(self, routes: Mapping[IPv4Network, IPv4Address] | Iterable[tuple[IPv4Network, IPv4Address]] = (),
                 port: int = 8285) -> None:
        items = dict(routes.items() if isinstance(routes, Mapping) else routes)
        subnets = {IPv4Network(n): IPv4Address(p) for n, p in items.items()}
        self._build(subnets, port, _one_length({net.prefixlen for net in subnets}),
                    {str(n): str(p) for n, p in subnets.items()},
                    {int(net.network_address): (str(peer), port) for net, peer in subnets.items()})

    def _build(self, subnets: dict[IPv4Network, IPv4Address], port: int, prefixlen: int,
               json: dict[str, str], by_net: dict[int, tuple[str, int]]) -> None:
        self.port = port
        self.prefixlen = prefixlen
        self.mask = (0xFFFFFFFF << (32 - prefixlen)) & 0xFFFFFFFF
        self._subnets = subnets  # private, never changed: a plain dict copies without rehashing
        self._json = json
        self._by_net = by_net

    def lookup(self, packet) -> tuple[str, int] | None:
        """The socket address for the destination of the IPv4 ``packet``, or None."""
        return self._by_net.get(int.from_bytes(packet[16:20], "big") & self.mask)

    def with_changes(self, sets: Mapping[IPv4Network, IPv4Address] = MappingProxyType({}),
                     deletes: Iterable[IPv4Network] = ()) -> RouteTable:
        """A new table with ``deletes`` removed, then ``sets`` added or changed; ValueError (and no
        new table) when a new subnet's prefix length differs from the others'."""
        subnets, json, by_net = self._subnets.copy(), self._json.copy(), self._by_net.copy()
        for net in map(IPv4Network, deletes):
            if subnets.pop(net, None) is not None:
                del json[str(net)]
                del by_net[int(net.network_address)]
        lengths = {self.prefixlen} if subnets else set()  # the kept subnets all have the table's length
        for net, peer in sets.items():
            net, peer = IPv4Network(net), IPv4Address(peer)
            lengths.add(net.prefixlen)
            subnets[net] = peer
            json[str(net)] = str(peer)
            by_net[int(net.network_address)] = (str(peer), self.port)
        table = RouteTable.__new__(RouteTable)
        table._build(subnets, self.port, _one_length(lengths), json, by_net)
        return table

    def with_route(self, subnet: IPv4Network, peer: IPv4Address) -> RouteTable:
        """A new table where ``subnet`` goes to ``peer`` (added or changed)."""
        return self.with_changes({subnet: peer})

    def without_route(self, subnet: IPv4Network) -> RouteTable:
        """A new table without ``subnet`` (unchanged when absent)."""
        return self.with_changes(deletes=[subnet])

    def as_json(self) -> dict[str, str]:
        return self._json.copy()

    @classmethod
    def from_json(cls, data: Mapping[str, str], port: int) -> RouteTable:
        return cls(data, port)

    def __len__(self) -> int:
        return len(self._subnets)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RouteTable) and (self.port, dict(self._subnets)) == (other.port, dict(other._subnets))

    def __hash__(self) -> int:
        return hash((self.port, frozenset(self._subnets.items())))

    def __repr__(self) -> str:
        return f"RouteTable({self.as_json()}, port={self.port})"


def _one_length(lengths: set[int]) -> int:
    """The one prefix length of a table's subnets (32 for an empty table), or ValueError."""
    if len(lengths) > 1:
        got = ', /'.join(map(str, sorted(lengths)))
        raise ValueError(f"all routed subnets must have one prefix length, got /{got}")
    return lengths.pop() if lengths else 32
