"""Netlink events that mean someone changed what we own: they trigger a reconcile at once.

Watched: deletion of a route with our protocol; deletion of a neighbour/FDB entry or an address
on a device a backend registered in ``Node.owned_links``; deletion of such a device, or it going
down. Everything else (ARP churn elsewhere, other tools' routes) is ignored, except that any
address added or removed on any device is reported to ``addresses_changed`` (peer leases are
judged against the node's own networks).

A plain ``AF_NETLINK`` socket read by trio itself (no thread): only the fixed headers are
decoded, which is all the decision needs.
"""

from __future__ import annotations

import logging
import socket
import struct
from collections.abc import Callable, Iterator

import trio

from .objects import RTPROT_OVERLAY

LOGGER = logging.getLogger("overlay.monitor")

NETLINK_ROUTE = 0
GROUPS = 0x1 | 0x4 | 0x10 | 0x40 | 0x100 | 0x400  # LINK NEIGH IPV4_IFADDR IPV4_ROUTE IPV6_IFADDR IPV6_ROUTE
RTM_NEWLINK, RTM_DELLINK, RTM_NEWADDR, RTM_DELADDR, RTM_DELROUTE, RTM_DELNEIGH = 16, 17, 20, 21, 25, 29
IFF_UP = 0x1
NLMSG_HEADER = struct.Struct("=IHHII")


def messages(data: bytes) -> Iterator[tuple[int, bytes]]:
    """Split a netlink datagram into ``(type, payload)``."""
    offset = 0
    while offset + NLMSG_HEADER.size <= len(data):
        length, kind, _, _, _ = NLMSG_HEADER.unpack_from(data, offset)
        if length < NLMSG_HEADER.size:
            return
        yield kind, data[offset + NLMSG_HEADER.size: offset + length]
        offset += (length + 3) & ~3


def relevant(kind: int, payload: bytes, owned: set[int]) -> bool:
    """Does this message mean drift in something we own?"""
    if kind == RTM_DELROUTE and len(payload) >= 8:
        return payload[5] == RTPROT_OVERLAY  # rtmsg.rtm_protocol
    if kind in (RTM_DELNEIGH, RTM_DELADDR) and len(payload) >= 8:
        fmt = "=i" if kind == RTM_DELNEIGH else "=I"  # ndmsg.ndm_ifindex / ifaddrmsg.ifa_index
        return struct.unpack_from(fmt, payload, 4)[0] in owned
    if kind in (RTM_DELLINK, RTM_NEWLINK) and len(payload) >= 12:
        index, flags = struct.unpack_from("=iI", payload, 4)  # ifinfomsg.ifi_index, ifi_flags
        return index in owned and (kind == RTM_DELLINK or not flags & IFF_UP)
    return False


async def monitor_kernel(owned: set[int], kick: Callable[[], None],
                         addresses_changed: Callable[[], None] | None = None, *,
                         task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Call ``kick()`` for every relevant kernel event, until cancelled."""
    sock = trio.socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
    with sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        await sock.bind((0, GROUPS))
        task_status.started()
        while True:
            try:
                data = await sock.recv(1 << 16)
            except OSError as exc:  # ENOBUFS: events were lost; reconcile to be sure
                LOGGER.debug("netlink monitor: %s; reconciling", exc)
                kick()
                if addresses_changed is not None:
                    addresses_changed()
                continue
            kinds = list(messages(data))
            if any(relevant(kind, payload, owned) for kind, payload in kinds):
                LOGGER.debug("kernel changed something we own: reconciling")
                kick()
            if addresses_changed is not None and any(kind in (RTM_NEWADDR, RTM_DELADDR) for kind, _ in kinds):
                addresses_changed()
