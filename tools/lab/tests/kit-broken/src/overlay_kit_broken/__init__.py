"""Two host-gw-like backends, each with one deliberate bug, for the conformance kit's self-test.

Both route each peer's subnet via its public IP (``ip route``, protocol 79, in the agent's own
namespace). ``kit-noremove`` never deletes a route (removals are forgotten); ``kit-nodrift``
keeps routes right on peer events but ignores ``overlay_reconcile``, so a deleted route stays
deleted. Plain ``Backend`` subclasses: a ``ReconcilingBackend`` would get both right from core.
"""

from __future__ import annotations

import subprocess

import trio
from overlay_core import Backend, LeaseRequest, hookimpl


async def ip(*args: str) -> None:
    await trio.to_thread.run_sync(lambda: subprocess.run(["ip", *args], capture_output=True, timeout=30))


class RouteBackend(Backend):
    """Correct on peer events: one route per peer subnet via the peer's public IP."""

    option_names = ()
    removes = True
    repairs = True

    @hookimpl
    def overlay_lease_request(self, node) -> LeaseRequest:
        return LeaseRequest(self.type, node.iface.mtu)

    async def _route(self, peer) -> None:
        await ip("route", "replace", str(peer.subnet), "via", str(peer.attrs.public_ip), "dev",
                 self.node.iface.name, "proto", "79")

    @hookimpl
    async def overlay_peers_added(self, peers) -> None:
        for peer in peers:
            await self._route(peer)

    @hookimpl
    async def overlay_peers_changed(self, changes) -> None:
        for _, new in changes:
            await self._route(new)

    @hookimpl
    async def overlay_peers_removed(self, peers) -> None:
        if self.removes:
            for peer in peers:
                await ip("route", "del", str(peer.subnet), "proto", "79")

    @hookimpl
    async def overlay_reconcile(self, peers) -> None:
        if self.repairs:
            for peer in peers:
                await self._route(peer)


class ForgetsRemovals(RouteBackend):
    type = "kit-noremove"
    removes = False


class NeverRepairs(RouteBackend):
    type = "kit-nodrift"
    repairs = False
