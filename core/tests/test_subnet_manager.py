"""Lease acquisition, ownership and reservations against a real etcd."""

from ipaddress import IPv4Address, IPv4Network

import pytest
import trio
from overlay_core.config import parse_config
from overlay_core.errors import SubnetsExhaustedError
from overlay_core.etcd import EtcdOptions, EtcdStore
from overlay_core.lease import LeaseAttrs
from overlay_core.subnets import Keys, LeaseLost, SubnetManager

pytestmark = pytest.mark.etcd

CFG = parse_config('{"Network":"10.3.0.0/16","SubnetMin":"10.3.1.0","SubnetMax":"10.3.25.0"}')


def attrs(n: int) -> LeaseAttrs:
    return LeaseAttrs(IPv4Address(f"192.0.2.{n}"), None, "alloc")


@pytest.fixture
def manager(shared_etcd, etcd_prefix):
    store = EtcdStore(EtcdOptions(endpoints=(shared_etcd.url,)))
    yield SubnetManager(store, Keys(etcd_prefix))
    store.close()


async def test_acquire_reuses_by_public_ip_and_honours_previous(manager):
    lease = await manager.acquire(CFG, attrs(1))
    assert CFG.ipv4.contains(lease.subnet) and not lease.is_reservation
    again = await manager.acquire(CFG, attrs(1))
    assert again.subnet == lease.subnet and again.revision == lease.revision  # nothing rewritten
    wanted = next(n for n in (IPv4Network("10.3.6.0/24"), IPv4Network("10.3.7.0/24")) if n != lease.subnet)
    prev = await manager.acquire(CFG, attrs(2), (wanted, None))
    assert prev.subnet == wanted
    outside = await manager.acquire(CFG, attrs(3), (IPv4Network("10.4.1.0/24"), None))
    assert outside.subnet != IPv4Network("10.4.1.0/24")
    ttl = await manager.remaining(lease)
    assert 24 * 3600 - 10 < ttl <= 24 * 3600


async def test_lease_written_in_flannel_format(manager):
    lease = await manager.acquire(CFG, LeaseAttrs(IPv4Address("192.0.2.9")))
    kv = await manager.store.get(manager.keys.lease(lease))
    assert kv.key == f"{manager.keys.prefix}/subnets/{lease.subnet.network_address}-24"
    assert kv.value == b'{"PublicIP":"192.0.2.9","PublicIPv6":null}'


async def test_concurrent_acquisitions_never_share_a_subnet(manager):
    small = parse_config('{"Network":"10.3.0.0/16","SubnetMin":"10.3.1.0","SubnetMax":"10.3.12.0"}')
    leases = {}

    async def one(n):
        leases[n] = await manager.acquire(small, attrs(n))

    async with trio.open_nursery() as nursery:
        for n in range(1, 13):
            nursery.start_soon(one, n)
    subnets = [lease.subnet for lease in leases.values()]
    assert len(set(subnets)) == 12
    _, stored = await manager.list_leases()
    assert sorted(str(s.subnet) for s in stored) == sorted(map(str, subnets))
    with pytest.raises(SubnetsExhaustedError, match="12 of 12"):
        await manager.acquire(small, attrs(13))


async def test_expired_subnet_taken_by_another_node_is_never_shared(manager):
    a = await manager.acquire(CFG, attrs(1))
    await manager.store.revoke(a.lease_id)  # A's lease expires while A is away
    b = await manager.acquire(CFG, attrs(2), (a.subnet, None))  # B takes A's subnet
    assert b.subnet == a.subnet
    with pytest.raises(LeaseLost):  # A's renewal must not overwrite B
        await manager.renew(a)
    a2 = await manager.acquire(CFG, attrs(1), (a.subnet, None))  # A comes back
    assert a2.subnet != a.subnet
    current = await manager.store.get(manager.keys.lease(b))
    assert b"192.0.2.2" in current.value


async def test_renewal_refreshes_in_place_and_recreates_a_vanished_key(manager):
    lease = await manager.acquire(CFG, attrs(1))
    renewed, ttl = await manager.renew(lease)
    assert renewed is lease and ttl > 0
    await manager.store.revoke(lease.lease_id)
    fresh, ttl = await manager.renew(lease)
    assert fresh.subnet == lease.subnet and fresh.lease_id != lease.lease_id and ttl > 0


async def test_reservations_are_honoured_and_never_get_a_ttl(manager):
    key = manager.keys.subnets + "10.3.7.0-24"
    await manager.store.put(key, attrs(5).to_json())  # administrator's reservation: no lease
    lease = await manager.acquire(CFG, attrs(5))
    assert lease.subnet == IPv4Network("10.3.7.0/24") and lease.is_reservation
    assert (await manager.store.get(key)).lease_id == 0
    assert await manager.remaining(lease) is None
    assert (await manager.renew(lease))[1] is None
    other = await manager.acquire(CFG, attrs(6), (IPv4Network("10.3.7.0/24"), None))
    assert other.subnet != IPv4Network("10.3.7.0/24")  # a reservation is not free


async def test_incompatible_own_lease_is_replaced(manager):
    old = await manager.acquire(parse_config('{"Network":"10.9.0.0/16"}'), attrs(1))
    new = await manager.acquire(CFG, attrs(1))
    assert CFG.ipv4.contains(new.subnet)
    assert await manager.store.get(manager.keys.lease(old)) is None
