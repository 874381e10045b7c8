"""Model-based tests of the peer watch: random interleavings of writes, deletions, expiries,
malformed values, takeovers of our key, compaction re-lists and our own lease moving, delivered
in random chunks through the real ``PeerWatcher`` code path. Whatever the order, once every
event is delivered the peers handed to the hooks must be exactly the well-formed leases in the
store other than the one we hold, and no hook may see a removal of something it never got."""

from __future__ import annotations

from dataclasses import dataclass, field

import trio
from hypothesis import given, settings
from hypothesis import strategies as st
from overlay_core.etcd import KV, WatchEvent, WatchResponse
from overlay_core.lease import LeaseAttrs
from overlay_core.peers import OwnKeyEvent, PeerSet, PeerWatcher

PREFIX = "/coreos.com/network/subnets/"
KEYS = [f"10.5.{i}.0-24" for i in range(1, 9)]
OUR_IP = "192.0.2.1"
OTHER_IPS = ["192.0.2.2", "192.0.2.3", "192.0.2.4"]


def value(ip: str) -> bytes:
    return LeaseAttrs.from_json(f'{{"PublicIP":"{ip}","BackendType":"vxlan"}}').to_json().encode()


@dataclass
class World:
    """The store, the events not yet delivered, and our own lease as the agent sees it."""

    store: dict[str, tuple[bytes, int, int]] = field(default_factory=dict)  # key -> (value, mod rev, lease)
    pending: list[WatchEvent] = field(default_factory=list)
    revision: int = 1
    own_key: str = KEYS[0]
    own_revision: int = 0
    programmed: dict[str, bytes] = field(default_factory=dict)
    seen_good: dict[str, bytes] = field(default_factory=dict)  # last good value the agent was shown

    def shown(self, events) -> None:
        """The agent receives ``events``: a malformed value keeps the last good one it saw."""
        for ev in events:
            key = ev.key.rsplit("/", 1)[-1]
            if ev.value is None:
                self.seen_good.pop(key, None)
            elif ev.value != b"garbage":
                self.seen_good[key] = ev.value

    def relisted(self) -> None:
        for key, (val, _, _) in self.store.items():
            if val != b"garbage":
                self.seen_good[key] = val
        for key in [k for k in self.seen_good if k not in self.store]:
            del self.seen_good[key]

    def write(self, key: str, val: bytes | None) -> None:
        self.revision += 1
        if val is None:
            if self.store.pop(key, None) is None:
                return
            self.pending.append(WatchEvent(PREFIX + key, None, self.revision))
        else:
            self.store[key] = (val, self.revision, 7)
            self.pending.append(WatchEvent(PREFIX + key, val, self.revision, 7))

    def expected(self) -> dict[str, bytes]:
        out = {}
        for key, (val, _, _) in self.store.items():
            good = self.seen_good.get(key) if val == b"garbage" else val
            if key != self.own_key and good is not None:
                out[key] = good
        return out


class FakeStore:
    def __init__(self, world: World) -> None:
        self.world = world

    async def range(self, prefix):
        kvs = [KV(PREFIX + k, v, rev, lease) for k, (v, rev, lease) in sorted(self.world.store.items())]
        return self.world.revision, kvs

    def note(self, ok):
        pass


async def run(ops) -> World:
    world = World()
    world.write(world.own_key, value(OUR_IP))
    world.own_revision = world.revision
    world.pending.clear()
    peer_set = PeerSet(world.own_key)

    async def on_batch(batch, snapshot):
        for lease in batch.removed:
            assert lease.key in world.programmed, f"removal of {lease.key} never delivered"
            del world.programmed[lease.key]
        for old, new in batch.changed:
            assert old.key in world.programmed
            world.programmed[new.key] = new.attrs.to_json().encode()
        for lease in batch.added:
            assert lease.key not in world.programmed, f"{lease.key} added twice"
            world.programmed[lease.key] = lease.attrs.to_json().encode()

    def move() -> None:
        free = [k for k in KEYS if k not in world.store]
        world.own_key = free[0] if free else world.own_key
        for lease in peer_set.claim(world.own_key).removed:  # as the lease keeper's take()
            del world.programmed[lease.key]
        world.write(world.own_key, value(OUR_IP))
        world.own_revision = world.revision

    async def on_own(event: OwnKeyEvent) -> None:
        """What the lease keeper does, in miniature."""
        if event.key != world.own_key:
            return
        if event.malformed:
            held = world.store.get(world.own_key)
            if event.revision >= world.own_revision and held is not None and held[1] == event.revision:
                world.write(world.own_key, value(OUR_IP))  # our value written back, guarded
                world.own_revision = world.revision
            return
        if event.lease is None:
            if event.revision < world.own_revision:
                return
            held = world.store.get(world.own_key)
            if held is None:
                world.write(world.own_key, value(OUR_IP))  # re-created on the same subnet
                world.own_revision = world.revision
            elif held[0] != value(OUR_IP):
                move()
            return
        if str(event.lease.attrs.public_ip) == OUR_IP:
            world.own_revision = max(world.own_revision, event.lease.revision)
        elif event.lease.revision >= world.own_revision:
            move()

    watcher = PeerWatcher(FakeStore(world), PREFIX, peer_set, on_batch, on_own)
    world.relisted()
    await watcher.resync()
    for op, key, arg in ops:
        if op == "put":
            world.write(KEYS[key], value(OTHER_IPS[arg % len(OTHER_IPS)]))
        elif op == "garbage":
            world.write(KEYS[key], b"garbage")
        elif op == "delete":
            world.write(KEYS[key], None)
        elif op == "deliver":
            chunk, world.pending = world.pending[: arg + 1], world.pending[arg + 1:]
            if chunk:
                world.shown(chunk)
                await watcher._deliver([WatchResponse(chunk[-1].mod_revision, chunk, 0.0)])
        elif op == "relist":  # the watch fell behind compaction: pending history is gone
            world.pending.clear()
            world.relisted()
            await watcher.resync()
    while world.pending:  # the watch catches up; on_own may add events while we deliver
        chunk, world.pending = world.pending, []
        world.shown(chunk)
        await watcher._deliver([WatchResponse(chunk[-1].mod_revision, chunk, 0.0)])
    return world


OPS = st.lists(
    st.tuples(st.sampled_from(["put", "put", "delete", "garbage", "deliver", "deliver", "relist"]),
              st.integers(0, len(KEYS) - 1), st.integers(0, 5)),
    max_size=40,
)


@settings(max_examples=1000, deadline=None)
@given(OPS)
def test_delivered_peers_match_the_store_whatever_the_interleaving(ops):
    world = trio.run(run, ops)
    assert world.programmed == world.expected()
    assert world.store[world.own_key][0] == value(OUR_IP)


def test_partition_heal_programs_the_node_that_took_our_old_subnet():
    """The cut heals and the old key's deletion and the taker's write arrive together: we move,
    and the taker's lease is a peer lease (issue 10)."""
    ops = [("delete", 0, 0), ("put", 0, 1), ("deliver", 0, 5)]
    world = trio.run(run, ops)
    assert world.own_key != KEYS[0]
    assert KEYS[0] in world.programmed and world.programmed == world.expected()
