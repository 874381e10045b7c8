"""Netlink events that mean someone changed what we own: they trigger a reconcile at once.

Watched: deletion of a route with our protocol; deletion of a neighbour/FDB entry, an address,
or the device itself, on a device a backend registered in ``Node.owned_links``; and such a
device going down. Everything else (ARP churn on other interfaces, other tools' routes) is
ignored. The socket lives on its own thread; the trio side only receives "kick" calls.
"""

from __future__ import annotations

import logging
import select
import threading
from collections.abc import Callable

import trio

from .objects import RTPROT_OVERLAY

LOGGER = logging.getLogger("overlay.monitor")

IFF_UP = 0x1


def relevant(msg, owned: set[int]) -> bool:
    event = msg["event"]
    if event == "RTM_DELROUTE":
        return msg["proto"] == RTPROT_OVERLAY
    if event in ("RTM_DELNEIGH", "RTM_DELADDR"):
        return msg["ifindex" if event == "RTM_DELNEIGH" else "index"] in owned
    if event == "RTM_DELLINK":
        return msg["index"] in owned
    if event == "RTM_NEWLINK":
        return msg["index"] in owned and not msg["flags"] & IFF_UP
    return False


async def monitor_kernel(owned: set[int], kick: Callable[[], None], *,
                         task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Call ``kick()`` (on the trio thread) for every relevant event, until cancelled."""
    from pyroute2 import IPRoute
    from pyroute2.netlink.rtnl import (
        RTMGRP_IPV4_IFADDR,
        RTMGRP_IPV4_ROUTE,
        RTMGRP_IPV6_IFADDR,
        RTMGRP_IPV6_ROUTE,
        RTMGRP_LINK,
        RTMGRP_NEIGH,
    )

    token = trio.lowlevel.current_trio_token()
    stop = threading.Event()
    ipr = IPRoute()
    ipr.bind(groups=RTMGRP_LINK | RTMGRP_NEIGH | RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_ROUTE
             | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR)
    task_status.started()

    def loop() -> None:
        try:
            while not stop.is_set():
                ready, _, _ = select.select([ipr.fileno()], [], [], 0.5)
                if not ready:
                    continue
                for msg in ipr.get():
                    if relevant(msg, owned):
                        LOGGER.debug("kernel event %s: reconciling", msg["event"])
                        token.run_sync_soon(kick)
        except Exception as exc:  # a broken monitor must not stop the node: the timer still runs
            LOGGER.warning("netlink monitor stopped (%s); relying on the periodic reconcile", exc)
        finally:
            ipr.close()

    try:
        await trio.to_thread.run_sync(loop, abandon_on_cancel=True)
    finally:
        stop.set()
