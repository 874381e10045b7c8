import random
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

import pytest
from overlay_core.config import parse_config
from overlay_core.errors import SubnetsExhaustedError
from overlay_core.lease import Lease, LeaseAttrs
from overlay_core.subnets import compatible, free_subnets, owned_by, pick_subnet

CFG = parse_config('{"Network":"10.3.0.0/16","SubnetMin":"10.3.1.0","SubnetMax":"10.3.25.0"}')


def lease(subnet, ip="192.0.2.1", v6=None):
    return Lease(IPv4Network(subnet), IPv6Network(v6) if v6 else None, LeaseAttrs(IPv4Address(ip)))


def test_free_subnets_skip_taken_and_overlapping():
    taken = [IPv4Network("10.3.1.0/24"), IPv4Network("10.3.2.0/23"), IPv4Network("10.3.5.0/24")]
    free = list(free_subnets(CFG.ipv4, taken))
    assert free[:3] == [IPv4Network("10.3.4.0/24"), IPv4Network("10.3.6.0/24"), IPv4Network("10.3.7.0/24")]
    assert len(free) == 25 - 4


def test_pick_prefers_previous_when_free_and_in_range():
    rand = random.Random(1)
    prev = IPv4Network("10.3.6.0/24")
    assert pick_subnet(CFG.ipv4, [], prev, rand) == prev
    outside = IPv4Network("10.4.1.0/24")
    assert pick_subnet(CFG.ipv4, [], outside, rand) != outside
    assert pick_subnet(CFG.ipv4, [prev], prev, rand) != prev


def test_pick_is_random_among_first_hundred_free():
    cfg = parse_config('{"Network":"10.0.0.0/8"}')
    rand = random.Random(7)
    picks = {pick_subnet(cfg.ipv4, [], None, rand) for _ in range(200)}
    assert len(picks) > 50
    assert all(int(p.network_address) < int(IPv4Address("10.0.102.0")) for p in picks)


def test_exhaustion_says_how_many_of_how_many():
    cfg = parse_config('{"Network":"10.0.0.0/26"}')  # /28 subnets .16, .32, .48
    taken = [IPv4Network(f"10.0.0.{n}/28") for n in (16, 32, 48)]
    with pytest.raises(SubnetsExhaustedError, match=r"3 of 3 /28 subnets of 10\.0\.0\.0/26"):
        pick_subnet(cfg.ipv4, taken, None, random.Random())


def test_compatible_and_owned_by():
    assert compatible(lease("10.3.4.0/24"), CFG)
    assert not compatible(lease("10.3.31.0/24"), CFG)  # outside SubnetMax
    assert not compatible(lease("10.3.4.0/25"), CFG)
    assert not compatible(lease("10.3.4.0/24", v6="fd00::/64"), CFG)  # v6 part but v6 disabled
    dual = parse_config('{"Network":"10.3.0.0/16","EnableIPv6":true,"IPv6Network":"fd00::/56"}')
    assert compatible(lease("10.3.4.0/24", v6="fd00:0:0:5::/64"), dual)
    assert not compatible(lease("10.3.4.0/24"), dual)
    attrs = LeaseAttrs(IPv4Address("192.0.2.1"))
    assert owned_by(lease("10.3.4.0/24"), attrs, CFG)
    assert not owned_by(lease("10.3.4.0/24", ip="192.0.2.2"), attrs, CFG)
    v6only = parse_config('{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00::/56"}')
    mine = Lease(None, IPv6Network("fd00:0:0:5::/64"), LeaseAttrs(public_ipv6=IPv6Address("2001:db8::1")))
    assert owned_by(mine, LeaseAttrs(public_ipv6=IPv6Address("2001:db8::1")), v6only)
    assert not owned_by(mine, LeaseAttrs(public_ipv6=IPv6Address("2001:db8::2")), v6only)


def test_cidr_relations_match_ipaddress_and_leave_no_cache_behind():
    from ipaddress import ip_network

    from overlay_core.cidr import overlap, within

    nets = [ip_network(n) for n in ("10.0.0.0/8", "10.5.0.0/16", "10.5.1.0/24", "10.6.1.0/24", "10.5.1.128/25",
                                    "192.0.2.0/24", "2001:db8::/32", "2001:db8:1::/48")]
    for a in nets:
        for b in nets:
            same = a.version == b.version
            assert overlap(a, b) == (same and a.overlaps(b)), (a, b)
            assert within(a, b) == (same and a.subnet_of(b)), (a, b)
    fresh = [ip_network("10.5.1.0/24"), ip_network("10.0.0.0/8")]
    assert overlap(*fresh) and within(*fresh)
    assert all("broadcast_address" not in getattr(n, "__dict__", {}) for n in fresh)
