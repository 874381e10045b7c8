"""What ``/readyz`` (and ``lab status``, and ``overlay-core status``) shows about a node."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Any

#: Seconds the peer counts of a plain ``/readyz`` may be reused. A probe loop (kubelet, a script
#: polling every few milliseconds while the node starts) must not cost a walk over every peer each
#: time; the readiness answer, every other fact and all of ``/readyz?verbose`` are computed per request.
PEER_STATUS_MAX_AGE = 1.0


class PeerStatusView:
    """The ``peer_status`` map of ``/readyz``, rebuilt at most once per ``max_age`` seconds
    unless a fresh one is asked for."""

    def __init__(self, max_age: float = PEER_STATUS_MAX_AGE, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_age = max_age
        self.clock = clock
        self._at: float | None = None
        self._value: dict[str, dict] = {}
        self.counts: dict[str, int] = {}  # peers by state, of the last map built

    def get(self, statuses: Callable[[], dict], fresh: bool = False) -> dict[str, dict]:
        now = self.clock()
        if fresh or self._at is None or now - self._at >= self.max_age:
            found = sorted(statuses().items())
            self._value = {key: {"state": st.state, **st.detail} for key, st in found}
            self.counts = dict(Counter(st.state for _, st in found))
            self._at = now
        return self._value


def node_report(agent, verbose: bool = False) -> dict[str, Any]:
    """The facts of a running agent: phase, store connection, lease, peers, helpers, rejected
    leases, config problems, and whatever the plugins add (``overlay_report``); peers counted by
    the state their backend reports (``overlay_peer_status``), and with ``verbose`` each peer's
    lease and state."""
    store = {**agent.store.state(), "endpoint": agent.store.endpoint_in_use(),  # state(): revision seen
             "applied_revision": agent.peer_set.revision, "watch_lag": agent.watch_lag()}
    facts: dict[str, Any] = {"phase": agent.phase, "store": store, **agent.config_watch.report()}
    node = agent.node
    if node is None:
        return facts
    facts["backend"] = node.config.backend_type
    facts["public_ip"] = str(node.iface.public_ip or node.iface.public_ipv6)
    facts["iface"] = {"name": node.iface.name, "mtu": node.iface.mtu}  # as at startup (doctor compares)
    facts["mtu"] = node.mtu
    if node.lease is not None:
        facts["subnet"] = str(node.lease.subnet) if node.lease.subnet else None
        facts["ipv6_subnet"] = str(node.lease.ipv6_subnet) if node.lease.ipv6_subnet else None
        facts["peers"] = len(agent.accepted_peers())
        facts["reservation"] = node.lease.is_reservation
        remaining = agent.keeper.remaining() if agent.keeper is not None else None
        if remaining is not None:
            facts["lease_expires_at"] = round(time.time() + remaining, 3)
    if node.lease is not None and verbose:
        facts["peer_leases"] = {
            peer.key: {"subnet": str(peer.subnet) if peer.subnet else None,
                       "ipv6_subnet": str(peer.ipv6_subnet) if peer.ipv6_subnet else None,
                       "public_ip": str(peer.attrs.public_ip or peer.attrs.public_ipv6 or "")}
            for peer in agent.accepted_peers()}
    if agent.services is not None and agent.services.supervisor.helpers:
        facts["helpers"] = agent.services.supervisor.report()
    if agent.dispatcher is not None and agent.dispatcher.rejected:
        facts["rejected_leases"] = agent.dispatcher.report()
    if agent.keeper is not None and agent.keeper.waiting:
        facts["waiting"] = agent.keeper.waiting
    facts.update(agent.hooks.report(node))
    view = agent.peer_status_view
    statuses = view.get(lambda: agent.hooks.peer_status(node), fresh=verbose)
    if statuses:
        facts["peer_states"] = view.counts
        if verbose:
            facts["peer_status"] = statuses
    return facts
