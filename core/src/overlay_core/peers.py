"""The peer set: every other node's lease, kept in step with etcd.

``PeerSet`` is the pure part (snapshot/diff, de-duplication, coalescing, revision ordering);
``PeerWatcher`` drives it from the store: snapshot at revision R, watch from R+1, re-watch from
the last seen revision after a broken stream, re-list and diff after a compaction.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

import trio

from .etcd import KV, EtcdStore, StoreUnavailable, WatchCompacted, WatchEvent, WatchResponse
from .lease import Lease
from .retry import Backoff, OutageLog
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
    """Something happened to the key we hold (``key``): ``lease`` is None when it was deleted,
    or when ``malformed``: someone wrote a value there that is not a lease."""

    lease: Lease | None
    revision: int
    key: str = ""
    malformed: bool = False


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
        own = OwnKeyEvent(None, revision, self.own_key or "")
        for kv in kvs:
            name = self._name(kv.key)
            lease = self.peers.get(name)
            if lease is None or lease.revision != kv.mod_revision or lease.lease_id != kv.lease_id:
                # unchanged keys (same mod revision) keep their decoded lease; a key whose new
                # value is malformed keeps its last good one, as it does in the watch
                lease = parse_kv(kv) or self.peers.get(name)
            if name == self.own_key:
                own = OwnKeyEvent(lease, kv.mod_revision, name, lease is None)
            elif lease is not None:
                fresh[name] = lease
        before: dict[str, Lease | None] = {k: self.peers.get(k) for k in {*self.peers, *fresh}}
        self.peers = fresh
        self.revision = max(self.revision, revision)
        return self._diff(before), own

    def _peer_event(self, name: str, ev: WatchEvent, before: dict[str, Lease | None]) -> None:
        current = self.peers.get(name)
        if current is not None and ev.mod_revision <= current.revision:
            return  # replayed or reordered: revisions only go forward
        if ev.value is None:
            if current is not None:
                before.setdefault(name, current)
                del self.peers[name]
            return
        lease = parse_kv(KV(ev.key, ev.value, ev.mod_revision, ev.lease_id))
        if lease is None:
            return  # malformed: keep what we had
        before.setdefault(name, current)
        self.peers[name] = lease

    def step(self, events: deque[WatchEvent]) -> tuple[PeerBatch, OwnKeyEvent | None]:
        """Apply ``events`` from the left, in order, until one is about the key we hold now.

        Returns the coalesced peer changes before it and that event (None once every event is
        consumed). Whether an event is ours is decided when it is reached, against the key held
        at that point: after the caller has handled an own-key event (which may move us to
        another subnet), the events that follow about the old key are peer events.
        """
        before: dict[str, Lease | None] = {}
        while events:
            ev = events.popleft()
            name = self._name(ev.key)
            if name == self.own_key:
                lease = None
                if ev.value is not None:
                    lease = parse_kv(KV(ev.key, ev.value, ev.mod_revision, ev.lease_id))
                self.revision = max(self.revision, ev.mod_revision)
                malformed = ev.value is not None and lease is None
                return self._diff(before), OwnKeyEvent(lease, ev.mod_revision, name, malformed)
            self._peer_event(name, ev, before)
            self.revision = max(self.revision, ev.mod_revision)
        return self._diff(before), None

    def claim(self, key: str) -> PeerBatch:
        """We now hold ``key``: it stops being a peer key (a removal, if a peer had it)."""
        self.own_key = key
        gone = self.peers.pop(key, None)
        return PeerBatch(removed=[gone] if gone is not None else [])

    def release(self, event: OwnKeyEvent) -> PeerBatch:
        """The key of ``event`` is no longer ours: record what it holds as a peer lease."""
        if event.key == self.own_key or event.malformed:
            return PeerBatch()
        before: dict[str, Lease | None] = {}
        current = self.peers.get(event.key)
        if event.lease is None:
            if current is not None and current.revision < event.revision:
                before[event.key] = current
                del self.peers[event.key]
        elif current is None or current.revision < event.lease.revision:
            before[event.key] = current
            self.peers[event.key] = event.lease
        return self._diff(before)


def _flatten(responses: Iterable[WatchResponse]) -> tuple[deque[WatchEvent], int]:
    events: deque[WatchEvent] = deque()
    header = 0
    for response in responses:
        events.extend(response.events)
        header = max(header, response.revision)
    return events, header


def _merge(first: PeerBatch, second: PeerBatch) -> PeerBatch:
    """One batch with the net effect of ``first`` then ``second`` (keys of a peer set)."""
    if not first:
        return second
    if not second:
        return first
    start: dict[str, Lease | None] = {}
    end: dict[str, Lease | None] = {}
    for batch in (first, second):
        for lease in batch.added:
            start.setdefault(lease.key, None)
            end[lease.key] = lease
        for old, new in batch.changed:
            start.setdefault(old.key, old)
            end[new.key] = new
        for lease in batch.removed:
            start.setdefault(lease.key, lease)
            end[lease.key] = None
    merged = PeerBatch()
    for key, old in start.items():
        new = end[key]
        if old is None and new is not None:
            merged.added.append(new)
        elif old is not None and new is None:
            merged.removed.append(old)
        elif old is not None and new is not None and old.attrs != new.attrs:
            merged.changed.append((old, new))
    return merged


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
        self._outage = OutageLog(LOGGER, "etcd", every=OUTAGE_LOG_EVERY, note="the data plane stays as it is")

    def _down(self, exc: Exception) -> None:
        self.connected = False
        self.store.note(False)
        self._outage.failed(exc)

    def _up(self) -> None:
        self._outage.recovered()
        self.connected = True
        self.store.note(True)

    async def resync(self) -> None:
        """Re-list every lease in one range read and deliver the difference."""
        started = trio.current_time()
        revision, kvs = await self.store.range(self.prefix)
        self._up()
        batch, own = self.peer_set.reset(revision, kvs)
        if own.key:
            await self.on_own(own)
            batch = _merge(batch, self.peer_set.release(own))
        await self.on_batch(batch, True)
        if self.metrics:
            self.metrics.resync_seconds.set(trio.current_time() - started)

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Snapshot, then watch forever. Never returns unless cancelled."""
        backoff = Backoff(WATCH_BACKOFF_START, WATCH_BACKOFF_MAX, jitter=0)
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
                await backoff.sleep()
                continue
            backoff.reset()

    async def _watch_once(self) -> None:
        send, recv = trio.open_memory_channel[WatchResponse](256)
        error: Exception | None = None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._consume, recv)
            async with send:
                try:
                    await self.store.watch(self.prefix, self.peer_set.revision + 1, send, on_created=self._up)
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
                if await self._deliver(responses) and self.metrics:
                    self.metrics.event_seconds.observe(trio.current_time() - first.received)

    async def _deliver(self, responses: list[WatchResponse]) -> bool:
        """Hand the events to the hooks in revision order; True when any peer batch was delivered.
        An event about the key we hold goes to ``on_own`` the moment it is reached; if that moved
        us off the key, the same event (and every later one about that key) is a peer event."""
        events, header = _flatten(responses)
        delivered = False
        while True:
            batch, own = self.peer_set.step(events)
            if batch:
                await self.on_batch(batch, False)
                delivered = True
            if own is None:
                break
            await self.on_own(own)
            released = self.peer_set.release(own)
            if released:
                await self.on_batch(released, False)
                delivered = True
        self.peer_set.revision = max(self.peer_set.revision, header)
        return delivered
