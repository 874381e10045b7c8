"""What ``/readyz`` (and ``lab status``, and ``overlay-core status``) shows about a node."""

from __future__ import annotations

import time
from typing import Any


def node_report(agent) -> dict[str, Any]:
    """The facts of a running agent: phase, store connection, lease, peers, helpers, rejected
    leases, config problems, and whatever the plugins add (``overlay_report``, ``overlay_peer_status``)."""
    store = {**agent.store.state(), "revision": agent.peer_set.revision}
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
    statuses = agent.hooks.peer_status(node)
    if statuses:
        facts["peer_status"] = {key: {"state": st.state, **st.detail} for key, st in sorted(statuses.items())}
    return facts
