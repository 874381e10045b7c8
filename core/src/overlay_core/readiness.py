"""What ``/readyz`` (and ``lab status``, and later ``overlay-core status``) shows about a node."""

from __future__ import annotations

from typing import Any


def node_report(agent) -> dict[str, Any]:
    """The facts of a running agent: phase, store connection, lease, peers, helpers, rejected
    leases, config problems, and whatever the plugins add (``overlay_report``, ``overlay_peer_status``)."""
    store = {**agent.store.state(), "applied_revision": agent.peer_set.revision, "watch_lag": agent.watch_lag()}
    facts: dict[str, Any] = {"phase": agent.phase, "store": store, **agent.config_watch.report()}
    node = agent.node
    if node is None:
        return facts
    facts["backend"] = node.config.backend_type
    facts["public_ip"] = str(node.iface.public_ip or node.iface.public_ipv6)
    if node.lease is not None:
        facts["subnet"] = str(node.lease.subnet) if node.lease.subnet else None
        facts["ipv6_subnet"] = str(node.lease.ipv6_subnet) if node.lease.ipv6_subnet else None
        facts["peers"] = len(agent.accepted_peers())
        facts["reservation"] = node.lease.is_reservation
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
