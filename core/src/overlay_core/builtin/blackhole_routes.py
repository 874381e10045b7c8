"""``--ip-blackhole-route``: keep a ``blackhole <own subnet>`` route, as flanneld does.

Every ``--iptables-resync`` seconds (the first check one period after start), for each family
of the current lease, a blackhole route for the own subnet is added unless one is there
already. Traffic to an address of this node's subnet that no more specific route claims (no
pod there) is then dropped here instead of leaving by the default route. The route is the
kernel's default protocol (not ``proto 79``), so the backends' reconcile never treats it as a
peer route; it stays on shutdown, like flanneld's. Failures are logged, never fatal.
"""

from __future__ import annotations

import functools
import logging
import socket
from collections.abc import Callable
from ipaddress import IPv4Network, IPv6Network

import trio

from ..dataplane.netlink import Netlink
from ..lease import Lease

LOGGER = logging.getLogger("overlay.blackhole")

RTN_BLACKHOLE = 6
MAIN_TABLE = 254

Subnet = IPv4Network | IPv6Network


def _present(ipr, subnet: Subnet) -> bool:
    family = socket.AF_INET if subnet.version == 4 else socket.AF_INET6
    for route in ipr.get_routes(family=family, table=MAIN_TABLE):
        if (route["type"] == RTN_BLACKHOLE and route["dst_len"] == subnet.prefixlen
                and route.get_attr("RTA_DST") == str(subnet.network_address)):
            return True
    return False


def ensure_blackhole_routes(ipr, subnets: list[Subnet]) -> tuple[list[Subnet], list[str]]:
    """On the netlink thread: add each missing blackhole route; ``(added, errors)``."""
    added, errors = [], []
    for subnet in subnets:
        try:
            if not _present(ipr, subnet):
                family = socket.AF_INET if subnet.version == 4 else socket.AF_INET6
                ipr.route("add", dst=str(subnet), type=RTN_BLACKHOLE, family=family, table=MAIN_TABLE)
                added.append(subnet)
        except Exception as exc:  # pyroute2's NetlinkError and friends: reported, retried next period
            errors.append(f"blackhole route {subnet}: {exc}")
    return added, errors


async def keep_blackhole_routes(netlink: Netlink, lease: Callable[[], Lease | None], period: float) -> None:
    """Run until cancelled: every ``period`` seconds ensure the routes for ``lease()``'s subnets."""
    reported: list[str] = []
    while True:
        await trio.sleep(period)
        current = lease()
        subnets = [s for s in (current.subnet, current.ipv6_subnet) if s is not None] if current else []
        added, errors = await netlink.call(functools.partial(ensure_blackhole_routes, subnets=subnets))
        for subnet in added:
            LOGGER.info("added blackhole route %s", subnet)
        if errors != reported:  # each distinct failure once, not every period
            for error in errors:
                LOGGER.warning("%s (retrying every %.0f s)", error, period)
            reported = errors
