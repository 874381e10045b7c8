"""The peer set: every other node's lease, kept in step with etcd.

``PeerSet`` is the pure part (snapshot/diff, de-duplication, coalescing, revision ordering);
``PeerWatcher`` drives it from the store: snapshot at revision R, watch from R+1, re-watch from
the last seen revision after a broken stream, re-list and diff after a compaction.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

import trio

from .etcd import KV, EtcdStore, StoreUnavailable, WatchCompacted, WatchEvent
from .lease import Lease
from .subnets import parse_kv

LOGGER = logging.getLogger("overlay.peers")

WATCH_BACKOFF_START = 0.1
WATCH_BACKOFF_MAX = 5.0
OUTAGE_LOG_EVERY = 30.0


@dataclass
class PeerBatch:
    """One de-duplicated set of peer changes, delivered to the hooks together."""

    added: list[Lease] = field(default_factory=list)
    changed: list[tuple[Lease, Lease]] = field(default_factory=list)
    removed: list[Lease] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.added or self.changed or self.removed)

    def __len__(self) -> int:
        return len(self.added) + len(self.changed) + len(self.removed)


@dataclass
class OwnKeyEvent:
    """Something happened to our own key: ``lease`` is None when it was deleted."""

    lease: Lease | None
    revision: int


class PeerSet:
    """Known peer leases by key. Our own key is tracked apart and never reported as a peer."""

    def __init__(self, own_key: str | None = None) -> None:
        self.peers: dict[str, Lease] = {}
        self.revision = 0
        self.own_key = own_key

    def _name(self, key: str) -> str:
        return key.rsplit("/", 1)[-1]

    def _diff(self, before: dict[str, Lease | None]) -> PeerBatch:
        batch = PeerBatch()
        for key, old in before.items():
            new = self.peers.get(key)
            if old is None and new is not None:
                batch.added.append(new)
            elif old is not None and new is None:
                batch.removed.append(old)
            elif old is not None and new is not None and old.attrs != new.attrs:
                batch.changed.append((old, new))
        return batch

    def reset(self, revision: int, kvs: Iterable[KV]) -> tuple[PeerBatch, OwnKeyEvent]:
        """Replace the set with a full listing; report the difference and our own key's state."""
        fresh: dict[str, Lease] = {}
        own: Lease | None = None
        for kv in kvs:
            name = self._name(kv.key)
            lease = self.peers.get(name)
            if lease is None or lease.revision != kv.mod_revision or lease.lease_id != kv.lease_id:
                lease = parse_kv(kv)  # unchanged keys (same mod revision) keep their decoded lease
                if lease is None:
                    continue
            if name == self.own_key:
                own = lease
            else:
                fresh[name] = lease
        before: dict[str, Lease | None] = {k: self.peers.get(k) for k in {*self.peers, *fresh}}
        self.peers = fresh
        self.revision = max(self.revision, revision)
        return self._diff(before), OwnKeyEvent(own, revision)

    def apply(
        self, responses: Iterable[tuple[int, list[WatchEvent]]]
    ) -> tuple[PeerBatch, list[OwnKeyEvent]]:
        """Apply watch responses in order; changes to one key within them are coalesced."""
        before: dict[str, Lease | None] = {}
        own_events: list[OwnKeyEvent] = []
        for header_revision, events in responses:
            for ev in events:
                name = self._name(ev.key)
                if name == self.own_key:
                    lease = None
                    if ev.value is not None:
                        lease = parse_kv(KV(ev.key, ev.value, ev.mod_revision, ev.lease_id))
                    if ev.value is None or lease is not None:
                        own_events.append(OwnKeyEvent(lease, ev.mod_revision))
                    continue
                current = self.peers.get(name)
                if current is not None and ev.mod_revision <= current.revision:
                    continue  # replayed or reordered: revisions only go forward
                if ev.value is None:
                    if current is not None:
                        before.setdefault(name, current)
                        del self.peers[name]
                    continue
                lease = parse_kv(KV(ev.key, ev.value, ev.mod_revision, ev.lease_id))
                if lease is None:
                    continue  # malformed: keep what we had
                before.setdefault(name, current)
                self.peers[name] = lease
            self.revision = max(self.revision, header_revision)
        return self._diff(before), own_events


BatchHandler = Callable[[PeerBatch, bool], Awaitable[None]]
OwnHandler = Callable[[OwnKeyEvent], Awaitable[None]]


class PeerWatcher:
    """Keeps a ``PeerSet`` in step with the store and hands each batch to ``on_batch``.

    ``on_batch(batch, snapshot)`` is awaited for every non-empty batch and for every full
    snapshot (``snapshot=True``, even when empty: it marks the store as in sync).
    ``on_own(event)`` is awaited when our own key changes or disappears.
    """

    def __init__(
        self,
        store: EtcdStore,
        prefix: str,
        peer_set: PeerSet,
        on_batch: BatchHandler,
        on_own: OwnHandler,
        metrics=None,
    ) -> None:
        self.store = store
        self.prefix = prefix
        self.peer_set = peer_set
        self.on_batch = on_batch
        self.on_own = on_own
        self.metrics = metrics
        self.connected = False
        self._outage_since: float | None = None
        self._outage_logged = -math.inf

    def _down(self, exc: Exception) -> None:
        now = trio.current_time()
        self.connected = False
        if self.metrics:
            self.metrics.etcd_connected.set(0)
        if self._outage_since is None:
            self._outage_since = now
        if now - self._outage_logged >= OUTAGE_LOG_EVERY:
            self._outage_logged = now
            LOGGER.warning(
                "%s; the data plane stays as it is; retrying (down for %.0f s)",
                exc,
                now - self._outage_since,
            )

    def _up(self) -> None:
        if self._outage_since is not None:
            LOGGER.info("etcd reachable again after %.1f s", trio.current_time() - self._outage_since)
        self._outage_since = None
        self._outage_logged = -math.inf
        self.connected = True
        if self.metrics:
            self.metrics.etcd_connected.set(1)

    async def resync(self) -> None:
        """Re-list every lease in one range read and deliver the difference."""
        started = trio.current_time()
        revision, kvs = await self.store.range(self.prefix)
        self._up()
        batch, own = self.peer_set.reset(revision, kvs)
        await self.on_own(own)
        await self.on_batch(batch, True)
        if self.metrics:
            self.metrics.resync_seconds.set(trio.current_time() - started)

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Snapshot, then watch forever. Never returns unless cancelled."""
        backoff = WATCH_BACKOFF_START
        need_list = self.peer_set.revision == 0  # else resume from the revision already applied
        started = False
        while True:
            try:
                if need_list:
                    await self.resync()
                    need_list = False
                if not started:
                    started = True
                    task_status.started()
                await self._watch_once()
            except WatchCompacted as exc:
                LOGGER.info("watch fell behind etcd compaction (%s); re-listing", exc)
                if self.metrics:
                    self.metrics.relists.inc()
                need_list = True
                continue
            except StoreUnavailable as exc:
                self._down(exc)
                await trio.sleep(backoff)
                backoff = min(backoff * 2, WATCH_BACKOFF_MAX)
                continue
            backoff = WATCH_BACKOFF_START

    async def _watch_once(self) -> None:
        send, recv = trio.open_memory_channel[tuple[int, list[WatchEvent]]](256)
        error: Exception | None = None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._consume, recv)
            async with send:
                try:
                    await self.store.watch(self.prefix, self.peer_set.revision + 1, send)
                except (WatchCompacted, StoreUnavailable) as exc:
                    error = exc
        if error is not None:
            raise error

    async def _consume(self, recv: trio.MemoryReceiveChannel) -> None:
        async with recv:
            async for first in recv:
                self._up()
                responses = [first]
                while True:
                    try:
                        responses.append(recv.receive_nowait())
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break
                batch, own_events = self.peer_set.apply(responses)
                for own in own_events:
                    await self.on_own(own)
                if batch:
                    await self.on_batch(batch, False)
