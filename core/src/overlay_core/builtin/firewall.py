"""Masquerade and forward rules (``--ip-masq``, ``--iptables-forward-rules``) as a plugin.

The firewall tool is found before the lease is written (a start-up precondition:
``open``); rules are applied for every lease the node takes and checked for drift every
``--iptables-resync`` seconds, on a task of the core nursery.
"""

from __future__ import annotations

import logging

import trio

from ..config import NetworkConfig
from ..dataplane.firewall import FamilyRules, Firewall, open_firewall
from ..plugins import hookimpl

LOGGER = logging.getLogger("overlay.firewall")


class FirewallRules:
    def __init__(self, masquerade: bool, forward: bool, fully_random: bool, resync: float, tasks, metrics) -> None:
        self.masquerade = masquerade
        self.forward = forward
        self.fully_random = fully_random
        self.resync = resync
        self.tasks = tasks
        self.metrics = metrics
        self.firewall: Firewall | None = None
        self._checking = False

    @property
    def wanted(self) -> bool:
        return self.masquerade or self.forward

    @property
    def ready(self) -> bool:
        return not self.wanted or (self.firewall is not None and self.firewall.in_place)

    async def open(self, config: NetworkConfig) -> None:
        """Find the firewall tool (and remove the other tool's leftovers) before the lease exists."""
        if self.wanted:
            versions = tuple(v for v, rng in ((4, config.ipv4), (6, config.ipv6)) if rng is not None)
            tool = await trio.to_thread.run_sync(open_firewall, config.enable_nftables, versions)
            self.firewall = Firewall(tool, [])

    @hookimpl
    async def overlay_lease_acquired(self, lease, node) -> None:
        if self.firewall is None:
            return
        self.firewall.rules = [
            FamilyRules(rng.network, subnet, self.masquerade, self.forward, self.fully_random)
            for rng, subnet in ((node.config.ipv4, lease.subnet), (node.config.ipv6, lease.ipv6_subnet))
            if rng is not None and subnet is not None
        ]
        await self.firewall.apply()
        if not self._checking:
            self._checking = True
            self.tasks.start_soon(self._drift_loop, name="firewall drift checks")

    async def _drift_loop(self) -> None:
        assert self.firewall is not None
        while True:
            await trio.sleep(self.resync)
            try:
                repaired = await self.firewall.check()
            except Exception as exc:  # a failing nft/iptables call must not stop the node
                LOGGER.error("firewall check failed: %s", exc)
                continue
            if repaired:
                self.metrics.firewall_repairs.inc(repaired)
