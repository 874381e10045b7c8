"""Kernel objects a backend wants, as plain values (diffed by ``overlay_core.reconcile``).

Ownership: routes carry our route protocol ``RTPROT_OVERLAY`` and lie inside the network's
CIDRs; neighbour and FDB entries are ours when they sit on a device the backend owns. Anything
else is never touched.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import TypeVar, Union

from ..cidr import within

RTPROT_OVERLAY = 79  # route protocol marking routes we own ("proto 79" in `ip route`)
MAIN_TABLE = 254
# rtmsg.rtm_type values of the route types a backend may want (linux/rtnetlink.h)
ROUTE_TYPES = {"unicast": 1, "blackhole": 6, "unreachable": 7, "prohibit": 8}

IPAddress = Union[IPv4Address, IPv6Address]
IPNetwork = Union[IPv4Network, IPv6Network]


@dataclass(frozen=True, order=True, slots=True)
class Route:
    """``dst via gateway dev oif [onlink]`` in the main table, ``proto 79``.

    ``type`` is the route type: ``unicast`` (the default), or ``unreachable``, ``blackhole`` or
    ``prohibit`` (no gateway, ``oif`` 0), which a backend uses to fail closed: pod traffic to a
    peer whose tunnel is down is refused instead of leaving in clear by the default route."""

    dst: IPNetwork
    gateway: IPAddress | None
    oif: int
    onlink: bool = False
    type: str = "unicast"
    key: tuple = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.type not in ROUTE_TYPES:
            raise ValueError(f"route type {self.type!r} is not one of {', '.join(ROUTE_TYPES)}")
        object.__setattr__(self, "key", ("route", self.dst.version, self.dst))

    def __str__(self) -> str:
        if self.type != "unicast":
            return f"route {self.type} {self.dst}"
        via = f" via {self.gateway}" if self.gateway is not None else ""
        return f"route {self.dst}{via} dev #{self.oif}{' onlink' if self.onlink else ''}"


@dataclass(frozen=True, order=True, slots=True)
class Neighbour:
    """A permanent neighbour (ARP/NDP) entry: ``dst lladdr`` on device ``ifindex``."""

    ifindex: int
    dst: IPAddress
    lladdr: str
    key: tuple = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", ("neigh", self.ifindex, self.dst))

    def __str__(self) -> str:
        return f"neigh {self.dst} lladdr {self.lladdr} dev #{self.ifindex}"


@dataclass(frozen=True, order=True, slots=True)
class FdbEntry:
    """A permanent bridge FDB entry on a VXLAN device: frames for ``lladdr`` go to ``dst``."""

    ifindex: int
    lladdr: str
    dst: IPAddress
    key: tuple = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", ("fdb", self.ifindex, self.lladdr))

    def __str__(self) -> str:
        return f"fdb {self.lladdr} dst {self.dst} dev #{self.ifindex}"


KernelObject = Union[Route, Neighbour, FdbEntry]
T = TypeVar("T", Route, Neighbour, FdbEntry)


@dataclass(frozen=True, slots=True)
class Scope:
    """What this backend owns: routes of ``proto 79`` inside ``networks``, and every permanent
    neighbour/FDB entry on ``devices``."""

    networks: tuple[IPNetwork, ...] = ()
    devices: tuple[int, ...] = ()

    def owns(self, obj: KernelObject) -> bool:
        if isinstance(obj, Route):
            return any(within(obj.dst, n) for n in self.networks)
        return obj.ifindex in self.devices


_INTERNED: dict = {}
INTERN_LIMIT = 200_000


def intern(obj: T) -> T:
    """The canonical instance equal to ``obj``. Desired objects (from plans) and actual ones
    (from dumps) are both interned, so the diff of an unchanged kernel is identity checks."""
    found = _INTERNED.get(obj)
    if found is None:
        if len(_INTERNED) > INTERN_LIMIT:
            _INTERNED.clear()
        found = _INTERNED[obj] = obj
    return found


def ordered_for_set(objs: Iterable[KernelObject]) -> list[KernelObject]:
    """FDB and neighbours before routes, so a route never points at an unresolved next hop."""
    rank = {FdbEntry: 0, Neighbour: 1, Route: 2}
    return sorted(objs, key=lambda o: rank[type(o)])


def ordered_for_delete(objs: Iterable[KernelObject]) -> list[KernelObject]:
    rank = {Route: 0, Neighbour: 1, FdbEntry: 2}
    return sorted(objs, key=lambda o: rank[type(o)])
