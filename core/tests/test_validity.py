"""Which peer leases may be programmed: the hostile and impossible lease table of issue 10,
and a property test of the rule against ``ipaddress``'s own overlap arithmetic."""

from ipaddress import IPv4Address, IPv4Network, ip_network

import pytest
from hypothesis import given
from hypothesis import strategies as st
from overlay_core.config import parse_config
from overlay_core.lease import LeaseAttrs, lease_from_kv
from overlay_core.validity import LeaseRules

CONFIG = parse_config('{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}')
DUAL = parse_config('{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"2001:db8:10::/48",'
                    '"Backend":{"Type":"vxlan"}}')
OWN = (IPv4Network("10.5.1.0/24"),)
LOCAL = ((IPv4Network("192.0.2.0/24"), "eth0"), (IPv4Network("10.5.77.0/24"), "docker0"))
RULES = LeaseRules(CONFIG, OWN, LOCAL)


def lease(key, ip="192.0.2.7", ip6=None):
    v6 = f',"PublicIPv6":"{ip6}"' if ip6 else ""
    return lease_from_kv(key, f'{{"PublicIP":"{ip}"{v6},"BackendType":"vxlan"}}', 5, 1)


@pytest.mark.parametrize("key, ip, code", [
    ("192.0.2.0-24", "192.0.2.7", "outside-network"),          # the underlay's own prefix
    ("10.99.0.0-24", "192.0.2.7", "outside-network"),
    ("10.5.0.0-16", "192.0.2.7", "wrong-length"),               # the whole network
    ("10.5.2.0-25", "192.0.2.7", "wrong-length"),
    ("10.5.1.0-24", "192.0.2.7", "own-subnet"),
    ("10.5.77.0-24", "192.0.2.7", "local-network"),             # a network on one of our devices
    ("10.5.2.0-24", "10.5.3.4", "public-ip-in-network"),
    ("10.5.2.0-24", "192.0.2.7", None),
])
def test_hostile_and_impossible_leases(key, ip, code):
    found = RULES.check(lease(key, ip))
    assert (found.code if found else None) == code
    if found:
        assert key.split("-")[0] in found.reason or ip in found.reason


def test_networks_inside_our_own_subnet_do_not_count_as_local():
    rules = LeaseRules(CONFIG, OWN, ((IPv4Network("10.5.1.0/24"), "cni0"),))
    assert rules.check(lease("10.5.2.0-24")) is None


def test_dual_stack_checks_every_enabled_family():
    rules = LeaseRules(DUAL, OWN, ())
    assert rules.check(lease("10.5.2.0-24&2001:db8:10:2::-64")) is None
    assert rules.check(lease("10.5.2.0-24&2001:db8:99::-64")).code == "outside-network"
    assert rules.check(lease("10.5.2.0-24", ip6="2001:db8:10::9")).code == "public-ip-in-network"
    only_v6 = LeaseRules(parse_config('{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"2001:db8:10::/48"}'))
    assert only_v6.check(lease("10.5.2.0-24")).code == "no-subnet"


@given(st.integers(0, 2**32 - 1), st.integers(8, 32), st.integers(0, 2**32 - 1))
def test_an_accepted_lease_never_touches_the_underlay_or_our_subnet(base, plen, public):
    net = ip_network((base, plen), strict=False)
    candidate = lease(f"{net.network_address}-{net.prefixlen}", str(IPv4Address(public)))
    if RULES.check(candidate) is None:
        assert net.subnet_of(IPv4Network("10.5.0.0/16")) and net.prefixlen == 24
        assert not any(net.overlaps(n) for n in OWN)
        assert not any(net.overlaps(n) for n, _ in LOCAL)
        assert IPv4Address(public) not in IPv4Network("10.5.0.0/16")


def test_attrs_are_plain_values():
    assert lease("10.5.2.0-24").attrs == LeaseAttrs(IPv4Address("192.0.2.7"), None, "vxlan")


def test_a_subnet_we_held_before_is_not_a_foreign_network_on_our_bridge():
    """After a partition heal we moved from 10.5.1.0/24; cni0 still carries 10.5.1.1/24 until
    the CNI plugin re-addresses it: the node that took 10.5.1.0/24 must still be reachable."""
    moved = LeaseRules(CONFIG, (IPv4Network("10.5.9.0/24"),), ((IPv4Network("10.5.1.0/24"), "cni0"),))
    assert moved.check(lease("10.5.1.0-24")).code == "local-network"
    remembered = LeaseRules(CONFIG, (IPv4Network("10.5.9.0/24"),), ((IPv4Network("10.5.1.0/24"), "cni0"),),
                            former=(IPv4Network("10.5.1.0/24"),))
    assert remembered.check(lease("10.5.1.0-24")) is None
