"""Choosing the external interface and public IPs (Flannel's rules, reference §3.4).

``read_interfaces`` takes one snapshot of links, addresses and default routes through
netlink; ``select_interface`` is pure and decides from that snapshot.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address

from .backend import ExternalInterface
from .dataplane.netlink import Netlink
from .errors import InterfaceError

LOGGER = logging.getLogger("overlay.iface")

IFA_F_TEMPORARY = 0x01
IFA_F_DEPRECATED = 0x20
IFA_F_PERMANENT = 0x80


@dataclass(frozen=True)
class Addr:
    ip: IPv4Address | IPv6Address
    flags: int = IFA_F_PERMANENT
    prefixlen: int | None = None

    @property
    def network(self):
        return ipaddress.ip_network(f"{self.ip}/{self.prefixlen or self.ip.max_prefixlen}", strict=False)

    def usable(self) -> bool:
        ip = self.ip
        if self.flags & IFA_F_DEPRECATED or ip.is_multicast or ip.is_loopback or ip.is_unspecified:
            return False
        return True

    def rank(self) -> tuple[int, int, int]:
        return (
            1 if self.ip.is_link_local else 0,
            0 if self.flags & IFA_F_PERMANENT else 1,
            1 if self.flags & IFA_F_TEMPORARY else 0,
        )


@dataclass(frozen=True)
class Link:
    name: str
    index: int
    mtu: int
    addrs: tuple[Addr, ...] = ()

    def family(self, version: int) -> list[IPv4Address | IPv6Address]:
        usable = [a for a in self.addrs if a.ip.version == version and a.usable()]
        return [a.ip for a in sorted(usable, key=Addr.rank)]

    def has(self, ip) -> bool:
        return any(a.ip == ip for a in self.addrs)


@dataclass(frozen=True)
class Snapshot:
    links: tuple[Link, ...]
    default_v4: int | None = None
    default_v6: int | None = None
    reach: tuple[int, IPv4Address | IPv6Address | None] | None = None  # (oif, prefsrc)

    def by_index(self, index: int | None) -> Link | None:
        return next((link for link in self.links if link.index == index), None)


@dataclass(frozen=True)
class IfaceOptions:
    ifaces: tuple[str, ...] = ()
    regexes: tuple[str, ...] = ()
    can_reach: str = ""
    public_ip: str = ""
    public_ipv6: str = ""
    ipv4: bool = True
    ipv6: bool = False


def _parse_ip(text: str, flag: str, version: int | None = None):
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        raise InterfaceError(f"{flag} {text!r} is not an IP address") from None
    if version and ip.version != version:
        raise InterfaceError(f"{flag} {text} must be an IPv{version} address")
    return ip


def _pin(link: Link, opts: IfaceOptions, v4=None, v6=None) -> ExternalInterface:
    """Fill in the addresses of the chosen link (keeping any pinned ones)."""
    if opts.ipv4 and v4 is None:
        found = link.family(4)
        if not found:
            raise InterfaceError(f"failed to find an IPv4 address for interface {link.name}")
        v4 = found[0]
    if opts.ipv6 and v6 is None:
        found = link.family(6)
        if not found:
            raise InterfaceError(f"failed to find an IPv6 address for interface {link.name}")
        v6 = found[0]
    if link.mtu <= 0:
        raise InterfaceError(f"interface {link.name} reports MTU {link.mtu}; cannot use it")
    public = _parse_ip(opts.public_ip, "--public-ip", 4) if opts.public_ip else v4
    public6 = _parse_ip(opts.public_ipv6, "--public-ipv6", 6) if opts.public_ipv6 else v6
    return ExternalInterface(
        link.name,
        link.index,
        link.mtu,
        v4 if opts.ipv4 else None,
        v6 if opts.ipv6 else None,
        public if opts.ipv4 else None,
        public6 if opts.ipv6 else None,
        tuple(a.network for a in link.addrs if a.usable() and not a.ip.is_link_local),
    )


def _by_iface(snap: Snapshot, value: str, opts: IfaceOptions) -> ExternalInterface | None:
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        link = next((link for link in snap.links if link.name == value), None)
        return _pin(link, opts) if link else None
    link = next((link for link in snap.links if link.has(ip)), None)
    if link is None:
        return None
    if ip.version == 4:
        return _pin(link, opts, v4=ip)
    return _pin(link, opts, v6=ip)


def _by_regex(snap: Snapshot, pattern: str, opts: IfaceOptions) -> ExternalInterface | None:
    try:
        rx = re.compile(pattern)
    except re.error as exc:
        raise InterfaceError(f"--iface-regex {pattern!r} is not a valid regular expression: {exc}") from None
    for link in snap.links:
        v4 = next((ip for ip in link.family(4) if rx.search(str(ip))), None) if opts.ipv4 else None
        v6 = next((ip for ip in link.family(6) if rx.search(str(ip))), None) if opts.ipv6 else None
        if (not opts.ipv4 or v4) and (not opts.ipv6 or v6):
            return _pin(link, opts, v4, v6)
    for link in snap.links:
        if rx.search(link.name):
            return _pin(link, opts)
    return None


def select_interface(snap: Snapshot, opts: IfaceOptions) -> ExternalInterface:
    """Apply Flannel's interface rules to a snapshot; ``InterfaceError`` when nothing fits."""
    if opts.ifaces or opts.regexes or opts.can_reach:
        for value in opts.ifaces:
            if found := _by_iface(snap, value, opts):
                return found
        for pattern in opts.regexes:
            if found := _by_regex(snap, pattern, opts):
                return found
        if opts.can_reach and snap.reach:
            oif, src = snap.reach
            link = snap.by_index(oif)
            if link:
                if src is not None and src.version == 4:
                    return _pin(link, opts, v4=src)
                return _pin(link, opts, v6=src)
        listing = "; ".join(
            f"{link.name}:[{','.join(str(a.ip) for a in link.addrs)}]" for link in snap.links
        )
        wanted = " ".join([*opts.ifaces, *opts.regexes, opts.can_reach]).strip()
        raise InterfaceError(
            f"no interface matches {wanted!r}; interfaces here: {listing or 'none'}"
        )
    if opts.public_ip or opts.public_ipv6:
        wanted_ip = opts.public_ip or opts.public_ipv6
        if found := _by_iface(snap, wanted_ip, opts):
            return found
        raise InterfaceError(
            f"no local interface has the address {wanted_ip}; behind NAT, also pass --iface"
        )
    index = snap.default_v4 if opts.ipv4 else snap.default_v6
    if opts.ipv4 and opts.ipv6 and snap.default_v4 != snap.default_v6:
        raise InterfaceError(
            "dual-stack needs the IPv4 and IPv6 default routes on one interface; pass --iface"
        )
    link = snap.by_index(index)
    if link is None:
        raise InterfaceError("no default route to pick the external interface from; pass --iface")
    return _pin(link, opts)


def _addr_flags(msg) -> int:
    flags = msg.get_attr("IFA_FLAGS")
    return int(flags if flags is not None else msg["flags"])


async def read_interfaces(netlink: Netlink, can_reach: str = "") -> Snapshot:
    """One netlink snapshot of what ``select_interface`` needs."""
    reach_ip = _parse_ip(can_reach, "--iface-can-reach") if can_reach else None

    def read(ipr) -> Snapshot:
        addrs: dict[int, list[Addr]] = {}
        for msg in ipr.get_addr():
            text = msg.get_attr("IFA_LOCAL") or msg.get_attr("IFA_ADDRESS")
            if text:
                ip = ipaddress.ip_address(text.split("%")[0])
                addrs.setdefault(msg["index"], []).append(Addr(ip, _addr_flags(msg), msg["prefixlen"]))
        links = tuple(
            Link(
                msg.get_attr("IFLA_IFNAME"),
                msg["index"],
                int(msg.get_attr("IFLA_MTU") or 0),
                tuple(addrs.get(msg["index"], ())),
            )
            for msg in ipr.get_links()
        )

        def default(family: int) -> int | None:
            for route in ipr.get_default_routes(family=family):
                oif = route.get_attr("RTA_OIF")
                if oif:
                    return int(oif)
            return None

        reach = None
        if reach_ip is not None:
            try:
                route = ipr.route("get", dst=str(reach_ip))[0]
            except Exception as exc:
                raise InterfaceError(f"--iface-can-reach {reach_ip}: no route ({exc})") from None
            src = route.get_attr("RTA_PREFSRC")
            reach = (int(route.get_attr("RTA_OIF")), ipaddress.ip_address(src) if src else None)
        return Snapshot(links, default(2), default(10), reach)

    return await netlink.call(read)
