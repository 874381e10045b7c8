"""Shared machinery for backends whose per-peer state is a set of objects in reconcile targets.

``ReconcilingBackend``: each peer lease maps to objects (``plan``, pure), which may belong to
several targets (kernel routes, a WireGuard device's peers, a cloud route table); peer events
are applied incrementally, each object to the target that accepts it, and a full
desired-vs-actual converge of every target runs after every snapshot, on a timer and when drift
is seen. ``KernelBackend`` adds the kernel target (routes, neighbour and FDB entries) with its
ownership scope and the backend's devices: VXLAN, host-gw and IPIP say only what they own,
how a peer is reached and how their devices are made.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from . import reconcile
from .backend import Backend, Node, PeerStatus
from .dataplane.kernel import Kernel
from .dataplane.objects import Route, Scope, intern
from .dispatch import LOG_EACH
from .lease import Lease
from .plugins import hookimpl
from .reconcile import Target
from .services import Services

LOGGER = logging.getLogger("overlay.peers")


@dataclass(frozen=True)
class PeerPlan:
    """How one peer is reached: ``mode`` (for example ``direct``, ``vxlan``, ``skipped``),
    the kernel objects that implement it, and why, when that is worth saying."""

    mode: str
    objects: tuple[Any, ...] = ()
    reason: str = ""


@dataclass
class PeerModes:
    """The last plan mode of every peer, to log decisions once and report counts."""

    modes: dict[str, str] = field(default_factory=dict)

    def record(self, peer: Lease, plan: PeerPlan) -> bool:
        """Remember the peer's mode; True when it is new or changed (worth logging)."""
        if self.modes.get(peer.key) == plan.mode:
            return False
        self.modes[peer.key] = plan.mode
        return True

    @staticmethod
    def log(decisions: list[tuple[Lease, PeerPlan]]) -> None:
        for peer, plan in decisions[:LOG_EACH]:
            detail = f": {plan.reason}" if plan.reason else ""
            log = LOGGER.warning if plan.mode == "skipped" else LOGGER.info
            log("peer %s: %s%s", peer.describe(), plan.mode, detail)
        if len(decisions) > LOG_EACH:
            counts: dict[str, int] = {}
            for _, plan in decisions[LOG_EACH:]:
                counts[plan.mode] = counts.get(plan.mode, 0) + 1
            LOGGER.info("and %d more peers: %s", len(decisions) - LOG_EACH,
                        ", ".join(f"{mode} {n}" for mode, n in sorted(counts.items())))

    def forget(self, peer: Lease) -> None:
        self.modes.pop(peer.key, None)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for mode in self.modes.values():
            out[mode] = out.get(mode, 0) + 1
        return out


def peer_route(subnet, via, oif: int, onlink: bool = False) -> Route:
    """The route to a peer's subnet: ``subnet via <via> dev <oif> [onlink]``."""
    return Route(subnet, via, oif, onlink)


def direct_plan(node: Node, peer: Lease, version: int) -> PeerPlan | None:
    """A plain route via the peer's public IP when it is on our external interface's L2
    segment (host-gw, and DirectRouting for VXLAN and IPIP); None when it is not."""
    subnet = peer.subnet if version == 4 else peer.ipv6_subnet
    via = peer.attrs.public_ip if version == 4 else peer.attrs.public_ipv6
    if subnet is None or not node.iface.onlink(via):
        return None
    return PeerPlan("direct", (peer_route(subnet, via, node.iface.index),),
                    f"{via} is on {node.iface.name}'s segment")


class ReconcilingBackend(Backend):
    """Base for backends whose per-peer state is objects in one or more reconcile targets."""

    def __init__(self, node: Node, services: Services | None = None) -> None:
        super().__init__(node, services)
        self.peer_modes = PeerModes()
        self.synced = False
        self._plans: dict[str, tuple[object, tuple, PeerPlan]] = {}

    # -- what subclasses provide ------------------------------------------------------------

    def targets(self) -> list[Target]:
        """Where this backend's objects live, in the order they are programmed."""
        raise NotImplementedError

    async def cleanup_targets(self) -> list[Target]:
        """The targets ``overlay-core cleanup`` converges to nothing, the agent stopped, after
        ``overlay_network_config`` only: ``targets()``. A backend whose targets need a lookup first
        (instance metadata, an API client) opens them here, changing nothing."""
        return list(self.targets())

    def plan(self, peer: Lease) -> PeerPlan:
        """Pure: how to reach ``peer`` given the node's current devices and interface."""
        raise NotImplementedError

    def plan_context(self) -> tuple:
        """What else ``plan`` depends on (devices, keys); a change invalidates memoised plans."""
        return ()

    async def prepare(self) -> None:
        """Create or repair what the targets need (devices, daemons), before every full converge."""

    # -- shared behaviour ---------------------------------------------------------------------

    def _plan(self, peer: Lease, context: tuple) -> PeerPlan:
        """``plan(peer)``, memoised while the peer's data and the context stay the same (a
        periodic reconcile at 10 000 peers then costs a dump and a diff, not 10 000 plans)."""
        cached = self._plans.get(peer.key)
        if cached is not None and cached[1] == context and (cached[0] is peer.attrs or cached[0] == peer.attrs):
            return cached[2]
        plan = self.plan(peer)
        plan = PeerPlan(plan.mode, tuple(intern(o) for o in plan.objects), plan.reason)
        self._plans[peer.key] = (peer.attrs, context, plan)
        return plan

    def _objects(self, peers: Sequence[Lease], record: bool = True) -> list[Any]:
        out: list[Any] = []
        decisions = []
        context = self.plan_context()
        for peer in peers:
            plan = self._plan(peer, context)
            if record and self.peer_modes.record(peer, plan):
                decisions.append((peer, plan))
            out.extend(plan.objects)
        self.peer_modes.log(decisions)
        return out

    def desired(self, peers: Sequence[Lease]) -> list[Any]:
        """Every object the backend wants for ``peers``; subclasses add per-node objects."""
        return self._objects(peers)

    async def converge(self, peers: Sequence[Lease]) -> tuple[int, int]:
        """Full desired-vs-actual reconcile of every target."""
        await self.prepare()
        desired = self.desired(peers)
        current = {p.key for p in peers}
        for key in [k for k in self.peer_modes.modes if k not in current]:
            del self.peer_modes.modes[key]
        for key in [k for k in self._plans if k not in current]:
            del self._plans[key]
        changed = await reconcile.converge_all(self.targets(), desired, self.node.metrics)
        if any(changed):
            LOGGER.info("reconcile: set %d and removed %d objects", *changed)
        return changed

    async def _apply(self, to_set: list[Any], to_delete: list[Any]) -> None:
        await reconcile.apply(self.targets(), to_set, to_delete)

    @hookimpl
    async def overlay_peers_added(self, peers: Sequence[Lease]) -> None:
        if self.synced:  # the first snapshot is applied by one diff in overlay_store_in_sync
            await self._apply(self._objects(peers), [])

    @hookimpl
    async def overlay_peers_changed(self, changes: Sequence[tuple[Lease, Lease]]) -> None:
        old = {o.key: o for o in self._objects([o for o, _ in changes], record=False)}
        new = self._objects([n for _, n in changes])
        keep = {o.key for o in new}
        await self._apply(new, [o for k, o in old.items() if k not in keep])

    @hookimpl
    async def overlay_peers_removed(self, peers: Sequence[Lease]) -> None:
        objs = self._objects(peers, record=False)
        for peer in peers:
            self.peer_modes.forget(peer)
            self._plans.pop(peer.key, None)
        await self._apply([], objs)

    @hookimpl
    async def overlay_store_in_sync(self, peers: Sequence[Lease]) -> None:
        self.synced = True  # from now on events apply incrementally, even if this diff fails
        await self.converge(peers)

    @hookimpl
    async def overlay_reconcile(self, peers: Sequence[Lease]) -> None:
        await self.converge(peers)

    @hookimpl
    def overlay_report(self) -> dict:
        return {"peer_modes": self.peer_modes.counts()}

    @hookimpl
    def overlay_peer_status(self) -> dict[str, PeerStatus]:
        out = {}
        for key, (_, _, plan) in self._plans.items():
            state = "skipped" if plan.mode == "skipped" else "programmed"
            detail = {"mode": plan.mode, **({"reason": plan.reason} if plan.reason else {})}
            out[key] = PeerStatus(state, detail)
        return out


class KernelBackend(ReconcilingBackend):
    """Base for backends that program routes/neighbours/FDB entries per peer."""

    def __init__(self, node: Node, services: Services | None = None) -> None:
        super().__init__(node, services)
        self.kernel = Kernel(node.netlink, self.scope)

    def targets(self) -> list[Target]:
        return [self.kernel]

    def scope(self) -> Scope:
        """What this backend owns; by default routes inside the network's CIDRs."""
        cfg = self.node.config
        networks = tuple(n for n in (cfg.network, cfg.ipv6_network) if n is not None)
        return Scope(networks, tuple(sorted(self.node.owned_links)))

    def plan_context(self) -> tuple:
        return tuple(sorted(self.node.owned_links))

    async def ensure_devices(self) -> None:
        """Create or repair the backend's devices (called before every full reconcile)."""

    async def prepare(self) -> None:
        await self.ensure_devices()
