"""Subnet leases in etcd: acquire, renew, re-acquire, without Flannel's ownership faults.

Every write is an etcd transaction guarded by the key's mod revision (``version == 0`` for a
create), so two nodes never hold one subnet: a node whose key was taken over fails its guarded
write and picks another subnet. Reservations (keys without an etcd lease) are honoured and
never given a TTL. A renewal refreshes the key's etcd lease in place (KeepAlive), so it is not
a write every other node has to process.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network

import trio

from .cidr import overlap
from .config import FamilyRange, NetworkConfig, parse_config
from .errors import ConfigError, SubnetsExhaustedError
from .etcd import KV, EtcdStore
from .lease import Lease, LeaseAttrs, parse_subnet_key

LOGGER = logging.getLogger("overlay.subnets")

LEASE_TTL = 24 * 3600
ACQUIRE_ATTEMPTS = 10
MAX_CANDIDATES = 100


class ConfigMissing(ConfigError):
    """No config key in the store yet."""


class LeaseLost(Exception):
    """Our subnet was taken over by another node (its key now names another public IP)."""


@dataclass(frozen=True)
class Keys:
    """Store key layout under a prefix (default ``/coreos.com/network``)."""

    prefix: str = "/coreos.com/network"

    @property
    def config(self) -> str:
        return f"{self.prefix.rstrip('/')}/config"

    @property
    def subnets(self) -> str:
        return f"{self.prefix.rstrip('/')}/subnets/"

    def lease(self, lease: Lease) -> str:
        return self.subnets + lease.key


def compatible(lease: Lease, config: NetworkConfig) -> bool:
    """True when ``lease`` is a subnet ``config`` could have handed out, in every family."""

    def fits(rng: FamilyRange | None, subnet) -> bool:
        return subnet is None if rng is None else rng.contains(subnet)

    return fits(config.ipv4, lease.subnet) and fits(config.ipv6, lease.ipv6_subnet)


def owned_by(lease: Lease, attrs: LeaseAttrs, config: NetworkConfig) -> bool:
    """A node's identity is its public IP (IPv6 public IP on an IPv6-only network)."""
    if config.ipv4:
        return lease.attrs.public_ip == attrs.public_ip
    return attrs.public_ipv6 is not None and lease.attrs.public_ipv6 == attrs.public_ipv6


def free_subnets(rng: FamilyRange, taken: Iterable[IPv4Network | IPv6Network | None]):
    """Yield free subnets of ``rng`` lowest first, skipping any that overlap ``taken``."""
    same_len, other = set(), []
    for net in taken:
        if net is None or net.version != rng.network.version:
            continue
        if net.prefixlen == rng.subnet_len:
            same_len.add(net)
        else:
            other.append(net)
    for candidate in rng.subnets():
        if candidate in same_len or any(overlap(candidate, o) for o in other):
            continue
        yield candidate


def pick_subnet(
    rng: FamilyRange,
    taken: list,
    previous: IPv4Network | IPv6Network | None,
    rand: random.Random,
) -> IPv4Network | IPv6Network:
    """The previous subnet when it fits and is free, else a random one of the first 100 free."""
    if previous is not None:
        if rng.contains(previous) and not any(t is not None and overlap(t, previous) for t in taken):
            return previous
        LOGGER.info("previous subnet %s is taken or outside the network; choosing another", previous)
    candidates = []
    for net in free_subnets(rng, taken):
        candidates.append(net)
        if len(candidates) >= MAX_CANDIDATES:
            break
    if not candidates:
        used = sum(1 for t in taken if t is not None and rng.contains(t))
        raise SubnetsExhaustedError(
            f"no free subnet: {used} of {rng.capacity} /{rng.subnet_len} subnets of {rng.network} "
            f"({rng.subnet_min} to {rng.subnet_max}) are leased or reserved; "
            "remove stale leases or enlarge the network"
        )
    return rand.choice(candidates)


class SubnetManager:
    """Reads the config and owns this node's lease. All methods may raise StoreUnavailable."""

    def __init__(self, store: EtcdStore, keys: Keys, ttl: int = LEASE_TTL) -> None:
        self.store = store
        self.keys = keys
        self.ttl = ttl
        self.rand = random.Random()

    async def get_config(self) -> NetworkConfig:
        kv = await self.store.get(self.keys.config)
        if kv is None:
            raise ConfigMissing(
                f"network config not found at {self.keys.config}; create it, for example: "
                f"etcdctl put {self.keys.config} '{{\"Network\":\"10.5.0.0/16\",\"Backend\":{{\"Type\":\"vxlan\"}}}}'"
            )
        return parse_config(kv.value)

    async def list_leases(self) -> tuple[int, list[Lease]]:
        """All well-formed leases in one range read; malformed ones are logged and skipped."""
        revision, kvs = await self.store.range(self.keys.subnets)
        return revision, parse_kvs(kvs)

    async def acquire(
        self,
        config: NetworkConfig,
        attrs: LeaseAttrs,
        previous: tuple[IPv4Network | None, IPv6Network | None] = (None, None),
    ) -> Lease:
        """Find or create this node's lease (reference §2.5, with guarded writes and retries)."""
        for attempt in range(1, ACQUIRE_ATTEMPTS + 1):
            _, leases = await self.list_leases()
            taken = list(leases)
            for lease in leases:
                if not owned_by(lease, attrs, config):
                    continue
                if compatible(lease, config):
                    claimed = await self._claim(lease, attrs)
                    if claimed is not None:
                        return claimed
                    break
                if lease.is_reservation:
                    LOGGER.warning("reservation %s does not fit the network config; leaving it", lease.key)
                    continue
                LOGGER.info("deleting our lease %s: it does not fit the network config", lease.key)
                if await self.store.delete(self.keys.lease(lease), expect_revision=lease.revision):
                    taken.remove(lease)
            else:
                lease = await self._create(config, attrs, previous, taken)
                if lease is not None:
                    return lease
            LOGGER.info("lease write lost a race (attempt %d of %d); retrying", attempt, ACQUIRE_ATTEMPTS)
            await trio.sleep(self.rand.uniform(0.05, 0.2))
        raise SubnetsExhaustedError(
            f"could not acquire a subnet after {ACQUIRE_ATTEMPTS} attempts: other nodes keep "
            "taking the candidates; check for nodes sharing this public IP"
        )

    async def _claim(self, lease: Lease, attrs: LeaseAttrs) -> Lease | None:
        """Take over our own existing lease, keeping its subnet; None if it changed under us."""
        key = self.keys.lease(lease)
        lease_id = lease.lease_id
        if lease_id and await self.store.keepalive(lease_id) <= 0:
            lease_id = await self.store.grant(self.ttl)
        if lease.attrs == attrs and lease_id == lease.lease_id:
            LOGGER.info("reusing lease %s", lease.describe())
            return lease
        ok, kv = await self.store.write_if(key, attrs.to_json(), lease.revision, lease_id)
        if not ok:
            return None
        LOGGER.info("reusing lease %s (updated)", lease.describe())
        return Lease(lease.subnet, lease.ipv6_subnet, attrs, kv.mod_revision, lease_id)

    async def _create(self, config, attrs, previous, taken: list[Lease]) -> Lease | None:
        v4 = v6 = None
        if config.ipv4:
            v4 = pick_subnet(config.ipv4, [t.subnet for t in taken], previous[0], self.rand)
        if config.ipv6:
            v6 = pick_subnet(config.ipv6, [t.ipv6_subnet for t in taken], previous[1], self.rand)
        lease = Lease(v4, v6, attrs)  # type: ignore[arg-type]
        lease_id = await self.store.grant(self.ttl)
        ok, kv = await self.store.write_if(self.keys.lease(lease), attrs.to_json(), 0, lease_id)
        if not ok:
            await self.store.revoke(lease_id)
            return None
        LOGGER.info("acquired new lease %s", lease.describe())
        return Lease(v4, v6, attrs, kv.mod_revision, lease_id)

    async def reacquire(self, lease: Lease) -> Lease | None:
        """Re-create our key on the same subnet after it vanished; None if someone took it."""
        lease_id = 0 if lease.is_reservation else await self.store.grant(self.ttl)
        ok, kv = await self.store.write_if(self.keys.lease(lease), lease.attrs.to_json(), 0, lease_id)
        if not ok:
            if lease_id:
                await self.store.revoke(lease_id)
            return None
        return Lease(lease.subnet, lease.ipv6_subnet, lease.attrs, kv.mod_revision, lease_id)

    async def restore(self, lease: Lease, revision: int) -> Lease | None:
        """Write our value back over a value someone replaced at ``revision`` (guarded by it);
        None when the key changed again meanwhile."""
        ok, kv = await self.store.write_if(self.keys.lease(lease), lease.attrs.to_json(), revision, lease.lease_id)
        if not ok:
            return None
        return Lease(lease.subnet, lease.ipv6_subnet, lease.attrs, kv.mod_revision, lease.lease_id)

    async def remaining(self, lease: Lease) -> float | None:
        """Seconds until the lease expires; None for a reservation (never expires)."""
        if lease.is_reservation:
            return None
        return float(await self.store.time_to_live(lease.lease_id))

    async def renew(self, lease: Lease) -> tuple[Lease, float | None]:
        """Refresh the lease's TTL; if its etcd lease is gone, re-create the key on the same subnet.

        Raises ``LeaseLost`` when the subnet now belongs to someone else.
        """
        if lease.is_reservation:
            return lease, None
        ttl = await self.store.keepalive(lease.lease_id)
        if ttl > 0:
            return lease, float(ttl)
        LOGGER.warning("etcd lease of %s expired; re-creating it on the same subnet", lease.key)
        fresh = await self.reacquire(lease)
        if fresh is None:
            raise LeaseLost(f"subnet {lease.key} was taken by another node while our lease was expired")
        return fresh, float(self.ttl)


_warned: set[tuple[str, bytes]] = set()


def parse_kvs(kvs: Iterable[KV]) -> list[Lease]:
    out = []
    for kv in kvs:
        lease = parse_kv(kv)
        if lease is not None:
            out.append(lease)
    return out


def parse_kv(kv: KV) -> Lease | None:
    """Decode one lease; a malformed key or value is warned about once and skipped."""
    try:
        subnet, ipv6_subnet = parse_subnet_key(kv.key)
        return Lease(subnet, ipv6_subnet, LeaseAttrs.from_json(kv.value), kv.mod_revision, kv.lease_id)
    except ValueError as exc:
        if (kv.key, kv.value) not in _warned:
            if len(_warned) > 4096:
                _warned.clear()
            _warned.add((kv.key, kv.value))
            LOGGER.warning("skipping malformed lease %s: %s", kv.key, exc)
        return None
