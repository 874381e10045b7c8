"""From the store's peer set to the backend's hooks: filter, judge, summarise, deliver.

The peer set holds every other lease in the store. What reaches the backend is narrower: leases
of its ``BackendType`` (others are ignored, logged once) that pass ``validity.LeaseRules``
(others are rejected: one WARNING per key and reason, a metric, and ``/readyz``). Two leases
with one subnet: the older keeps it. Judgements are revisited whenever a peer goes away, our own
subnet changes or the node's interfaces change, so a lease rejected for a conflict is delivered
as soon as the conflict is gone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .lease import Lease
from .peers import PeerBatch
from .validity import LeaseRules, Network, Rejection

LOGGER = logging.getLogger("overlay.peers")

LOG_EACH = 10  # peers logged one by one up to this many per batch, then summarised

@dataclass
class PeerDispatcher:
    """``accepts(lease)`` is the backend's BackendType filter; ``hooks`` (``plugins.Hooks``)
    and ``node`` are what peer hooks are called with; ``metrics`` is the agent's ``Metrics``."""

    rules: LeaseRules
    accepts: Callable[[Lease], bool]
    hooks: Any
    node: Any
    metrics: Any
    accepted: dict[str, Lease] = field(default_factory=dict)
    rejected: dict[str, tuple[Lease, Rejection]] = field(default_factory=dict)
    _subnets: dict[Network, str] = field(default_factory=dict)
    _ignored: set[str] = field(default_factory=set)

    # -- judging -------------------------------------------------------------------------------

    def _judge(self, lease: Lease) -> Rejection | None:
        found = self.rules.check(lease)
        if found is not None:
            return found
        for subnet in self.rules.subnets(lease):
            holder = self._subnets.get(subnet)
            if holder is not None and holder != lease.key:
                return Rejection("overlaps-peer", f"{subnet} is already the subnet of lease {holder}")
        return None

    def _ours(self, lease: Lease) -> bool:
        if self.accepts(lease):
            return True
        if lease.key not in self._ignored:
            self._ignored.add(lease.key)
            LOGGER.info("ignoring lease %s: BackendType %r is not this backend's", lease.key,
                        lease.attrs.backend_type)
        return False

    def _accept(self, lease: Lease) -> None:
        self.accepted[lease.key] = lease
        for subnet in self.rules.subnets(lease):
            self._subnets[subnet] = lease.key

    def _drop(self, key: str) -> Lease | None:
        lease = self.accepted.pop(key, None)
        if lease is not None:
            for subnet in self.rules.subnets(lease):
                if self._subnets.get(subnet) == key:
                    del self._subnets[subnet]
        return lease

    def _reject(self, lease: Lease, why: Rejection) -> None:
        previous = self.rejected.get(lease.key)
        self.rejected[lease.key] = (lease, why)
        if previous is None or previous[1] != why:
            LOGGER.warning("skipping lease %s: %s", lease.key, why.reason)
            self.metrics.leases_rejected.labels(why.code).inc()
        self.metrics.rejected_leases.set(len(self.rejected))

    def _unreject(self, key: str) -> None:
        if self.rejected.pop(key, None) is not None:
            LOGGER.info("lease %s is no longer rejected", key)
            self.metrics.rejected_leases.set(len(self.rejected))

    # -- translating store changes into backend changes ---------------------------------------

    def translate(self, batch: PeerBatch) -> PeerBatch:
        """The backend's view of ``batch``: only accepted leases, with rejected ones moved in
        and out as their conflicts come and go."""
        out = PeerBatch()
        for lease in batch.removed:
            gone = self._drop(lease.key)
            if gone is not None:
                out.removed.append(gone)
            self._unreject(lease.key)
            self._ignored.discard(lease.key)
        for old, new in batch.changed:
            self._place(new, self._drop(old.key), out)
        for lease in sorted(batch.added, key=lambda item: item.revision):
            self._place(lease, None, out)
        if batch.removed or batch.changed:
            self._revisit(out)
        return out

    def _place(self, lease: Lease, was: Lease | None, out: PeerBatch) -> None:
        why = self._judge(lease) if self._ours(lease) else Rejection("", "")
        if why is None:
            self._unreject(lease.key)
            self._accept(lease)
            if was is not None:
                out.changed.append((was, lease))
            else:
                out.added.append(lease)
            return
        if was is not None:
            out.removed.append(was)
        if why.code:
            self._reject(lease, why)
        else:
            self._unreject(lease.key)

    def _revisit(self, out: PeerBatch) -> None:
        """Give rejected leases another look (a conflict may be gone), oldest first."""
        for lease, _ in sorted(self.rejected.values(), key=lambda item: item[0].revision):
            if self._judge(lease) is None:
                self._unreject(lease.key)
                self._accept(lease)
                out.added.append(lease)

    def rules_changed(self, rules: LeaseRules) -> PeerBatch:
        """Our subnet or the node's interfaces changed: judge every lease again."""
        if rules == self.rules:
            return PeerBatch()
        self.rules = rules
        out = PeerBatch()
        everything = [*self.accepted.values(), *(lease for lease, _ in self.rejected.values())]
        previous = dict(self.accepted)
        self.accepted.clear()
        self._subnets.clear()
        for lease in sorted(everything, key=lambda item: item.revision):
            why = self._judge(lease)
            if why is None:
                self._unreject(lease.key)
                self._accept(lease)
                if lease.key not in previous:
                    out.added.append(lease)
            else:
                if lease.key in previous:
                    out.removed.append(lease)
                self._reject(lease, why)
        return out

    def report(self) -> dict[str, str]:
        return {key: why.reason for key, (_, why) in sorted(self.rejected.items())}

    # -- delivering -------------------------------------------------------------------------------

    async def deliver(self, batch: PeerBatch) -> None:
        """Call the peer hooks for an already translated batch: removals, changes, additions."""
        for call, items, kind in (
            (self.hooks.peers_removed, batch.removed, "removed"),
            (self.hooks.peers_changed, batch.changed, "changed"),
            (self.hooks.peers_added, batch.added, "added"),
        ):
            if not items:
                continue
            LOGGER.info("peers %s: %s", kind, summarise(i[1] if isinstance(i, tuple) else i for i in items))
            self.metrics.peer_events.labels(kind).inc(len(items))
            await call(items, self.node)


def summarise(leases: Iterable[Lease]) -> str:
    items = list(leases)
    shown = ", ".join(lease.describe() for lease in items[:LOG_EACH])
    more = f" and {len(items) - LOG_EACH} more" if len(items) > LOG_EACH else ""
    return shown + more
