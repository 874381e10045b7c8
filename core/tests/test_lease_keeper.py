"""Lease renewal under a failing store, on trio's mock clock: retries back off, but always fit
before the lease expires (issue 10: a fixed 60 s retry let short leases expire)."""

import trio
from overlay_core.backend import ExternalInterface, Node
from overlay_core.config import parse_config
from overlay_core.etcd import StoreUnavailable
from overlay_core.lease import lease_from_kv
from overlay_core.lease_keeper import LeaseKeeper, renew_retry_delay
from overlay_core.metrics import Metrics
from overlay_core.peers import PeerSet

TTL = 100.0


def test_retry_delay_doubles_and_stays_within_a_quarter_of_the_time_left():
    assert [renew_retry_delay(n, None) for n in (1, 2, 3, 7, 8, 20)] == [1, 2, 4, 60, 60, 60]
    assert renew_retry_delay(6, 40.0) == 10.0
    assert renew_retry_delay(6, 1.0) == 0.5  # never a busy loop


class FlakyStore:
    """``renew`` fails until ``heals_at`` (mock-clock seconds), then refreshes the TTL."""

    def __init__(self, heals_at: float) -> None:
        self.heals_at = heals_at
        self.attempts: list[float] = []

    async def renew(self, lease):
        now = trio.current_time()
        self.attempts.append(now)
        if now < self.heals_at:
            raise StoreUnavailable("etcd at http://192.0.2.100:2379 is not usable: UNAVAILABLE")
        return lease, TTL

    async def remaining(self, lease):
        return TTL


async def test_renewal_retries_fit_before_a_short_lease_expires(autojump_clock):
    config = parse_config('{"Network":"10.5.0.0/16"}')
    node = Node(config, ExternalInterface("eth0", 2, 1500), netlink=None)
    node.lease = lease_from_kv("10.5.1.0-24", '{"PublicIP":"192.0.2.1"}', 5, 7)
    store = FlakyStore(heals_at=90.0)  # an outage from before the renewal time to 10 s before expiry
    renewed = []

    async def retry(what, fn):
        return await fn()

    class Hooks:
        async def lease_renewed(self, lease, remaining, node):
            renewed.append((trio.current_time(), remaining))

    keeper = LeaseKeeper(node, store, PeerSet(), retry, None, Hooks(), Metrics(), renew_margin=60.0)
    await keeper.refresh_expiry()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(keeper.renew_loop)
        with trio.fail_after(200):
            while not renewed:
                await trio.sleep(1)
        nursery.cancel_scope.cancel()
    assert store.attempts[0] == 40.0  # TTL minus the margin
    assert 90.0 <= renewed[0][0] < TTL  # renewed before expiry, soon after the store came back
    gaps = [b - a for a, b in zip(store.attempts, store.attempts[1:])]
    assert gaps[0] == 1.0 and max(gaps) < 15
