"""Keeping this node's lease: acquire, renew, re-create, and move when the subnet is lost.

Every change of the lease goes through one lock, so the renewal loop and own-key events from the
peer watch never act on the same loss twice. Renewal retries with a backoff bounded by the time
the lease has left, so a short outage never lets a short lease expire.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import trio

from .backend import Node
from .config import NetworkConfig
from .errors import SubnetsExhaustedError
from .etcd import StoreUnavailable
from .lease import Lease, LeaseAttrs
from .peers import OwnKeyEvent, PeerBatch, PeerSet
from .subnets import LeaseLost, SubnetManager, owned_by

LOGGER = logging.getLogger("overlay.lease")

T = TypeVar("T")
Retry = Callable[[str, Callable[[], Awaitable[T]]], Awaitable[T]]

EXHAUSTED_RETRY = 5.0
RENEW_BACKOFF_START = 1.0
RENEW_BACKOFF_MAX = 60.0  # Flannel's fixed renewal retry, now the ceiling
RENEW_MIN_DELAY = 0.5


def renew_retry_delay(failures: int, remaining: float | None) -> float:
    """Seconds before renewal attempt ``failures + 1``: doubling from 1 s up to 60 s, but never
    more than a quarter of the time the lease has left, so several attempts fit before expiry."""
    delay = min(RENEW_BACKOFF_START * 2 ** max(failures - 1, 0), RENEW_BACKOFF_MAX)
    if remaining is not None:
        delay = min(delay, max(remaining / 4, RENEW_MIN_DELAY))
    return delay


class LeaseKeeper:
    """Owns ``node.lease``. ``on_taken(lease)`` runs the agent's steps for a newly held lease
    (hooks, firewall, subnet file); ``hooks`` is the typed hook caller (``plugins.Hooks``)."""

    def __init__(self, node: Node, subnets: SubnetManager, peer_set: PeerSet, retry: Retry,
                 on_taken: Callable[[Lease], Awaitable[None]], hooks,
                 metrics, renew_margin: float,
                 on_peers: Callable[[PeerBatch, bool], Awaitable[None]] | None = None) -> None:
        self.node = node
        self.subnets = subnets
        self.peer_set = peer_set
        self.retry = retry
        self.on_taken = on_taken
        self.hooks = hooks
        self.metrics = metrics
        self.renew_margin = renew_margin
        self.on_peers = on_peers
        self.expires_at: float | None = None
        self.waiting = ""
        self._lock = trio.Lock()
        self._changed = trio.Event()

    # -- acquiring -------------------------------------------------------------------------

    async def acquire(self, config: NetworkConfig, attrs: LeaseAttrs, previous=(None, None)) -> Lease:
        """Acquire a lease; when every subnet is taken, say so (log and /readyz) and keep trying:
        a node joining a full network waits for a subnet instead of crash-looping."""
        last = ""
        while True:
            try:
                lease = await self.retry("acquiring a lease", lambda: self.subnets.acquire(config, attrs, previous))
            except SubnetsExhaustedError as exc:
                if str(exc) != last:
                    LOGGER.error("%s (retrying every %.0f s)", exc, EXHAUSTED_RETRY)
                    last = str(exc)
                self.waiting = str(exc)
                await trio.sleep(EXHAUSTED_RETRY)
                continue
            self.waiting = ""
            return lease

    async def take(self, lease: Lease) -> None:
        """Make ``lease`` ours: from now on events about its key are own-key events."""
        self.node.lease = lease
        gone = self.peer_set.claim(lease.key)
        if gone and self.on_peers is not None:
            await self.on_peers(gone, False)  # a peer held it until our view caught up
        await self.on_taken(lease)
        await self.refresh_expiry()
        self._wake()

    async def _lost(self, reason: str) -> None:
        old = self.node.lease
        assert old is not None
        LOGGER.error("lost subnet %s: %s; acquiring another one", old.key, reason)
        await self.hooks.lease_lost(old, reason, self.node)
        await self.take(await self.acquire(self.node.config, old.attrs))

    # -- own-key events ----------------------------------------------------------------------

    async def on_own(self, event: OwnKeyEvent) -> None:
        """The key we hold changed at ``event.revision``: adopt a renewal or reservation,
        re-create a deleted key, or move to another subnet when someone else holds it now.

        Decided against the lease held when the event is reached: an event older than our
        lease, or about a key we no longer hold, is not about our lease at all.
        """
        async with self._lock:
            current = self.node.lease
            assert current is not None
            if event.key and event.key != current.key:
                return  # we moved meanwhile: the watcher treats it as a peer event
            if event.malformed:
                if event.revision >= current.revision:
                    LOGGER.warning("the value of our lease key %s was overwritten with something that is not "
                                   "a lease; writing ours back", current.key)
                    revision = event.revision
                    fresh = await self.retry("restoring our lease",
                                             lambda: self.subnets.restore(current, revision))
                    if fresh is not None:
                        self.node.lease = fresh
                        self._wake()
                return
            if event.lease is not None:
                if owned_by(event.lease, current.attrs, self.node.config):
                    if event.lease.revision >= current.revision:
                        if event.lease.is_reservation and not current.is_reservation:
                            LOGGER.info("our lease %s became a reservation; no more renewals", current.key)
                        self.node.lease = event.lease
                        self._wake()
                    return
                if event.lease.revision < current.revision:
                    return  # history from before we (re-)wrote the key
                await self._lost(f"its key now names {event.lease.attrs.public_ip}")
                return
            if event.revision < current.revision:
                return  # a deletion from before our latest write of the key
            LOGGER.warning("our lease key %s disappeared; re-creating it on the same subnet", current.key)
            fresh = await self.retry("re-creating our lease", lambda: self.subnets.reacquire(current))
            if fresh is None:
                await self._lost("another node took it while our key was gone")
                return
            self.node.lease = fresh
            self._wake()
            await self.refresh_expiry()

    # -- renewal -----------------------------------------------------------------------------

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def refresh_expiry(self) -> None:
        lease = self.node.lease
        assert lease is not None
        self.set_expiry(await self.retry("reading our lease TTL", lambda: self.subnets.remaining(lease)))

    def set_expiry(self, remaining: float | None) -> None:
        if remaining is None:
            self.expires_at = None
            self.metrics.lease_expiry.set(0)
        else:
            self.expires_at = trio.current_time() + remaining
            self.metrics.lease_expiry.set(time.time() + remaining)

    def remaining(self) -> float | None:
        return None if self.expires_at is None else self.expires_at - trio.current_time()

    async def renew_loop(self) -> None:
        failures = 0
        while True:
            lease = self.node.lease
            assert lease is not None
            changed = self._changed
            if lease.is_reservation or self.expires_at is None:
                await changed.wait()
                failures = 0
                continue
            remaining = self.remaining() or 0.0
            delay = renew_retry_delay(failures, remaining) if failures else remaining - self.renew_margin
            with trio.move_on_after(max(delay, 0)) as timer:
                await changed.wait()
            if not timer.cancelled_caught:
                failures = 0  # the lease changed (re-created, moved, reservation): start over
                continue
            try:
                async with self._lock:
                    if self.node.lease is not lease:
                        continue
                    fresh, left = await self.subnets.renew(lease)
                    self.node.lease = fresh
                    self.set_expiry(left)
            except StoreUnavailable as exc:
                failures += 1
                self.metrics.renewals.labels("failed").inc()
                left_now = self.remaining()
                LOGGER.warning("lease renewal failed (%s); retrying in %.1f s (%.0f s left on the lease)",
                               exc, renew_retry_delay(failures, left_now), max(left_now or 0, 0))
                continue
            except LeaseLost as exc:
                failures = 0
                self.metrics.renewals.labels("lost").inc()
                async with self._lock:
                    if self.node.lease is lease:
                        await self._lost(str(exc))
                continue
            failures = 0
            self.metrics.renewals.labels("ok").inc()
            LOGGER.info("renewed lease %s (%.0f s left)", fresh.key, left or 0)
            await self.hooks.lease_renewed(fresh, left, self.node)
