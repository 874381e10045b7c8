from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_network
from types import SimpleNamespace

import pytest
from overlay_core import ConfigError, Lease, LeaseAttrs, parse_config
from overlay_core.backend import ExternalInterface, Node
from overlay_core.dataplane.objects import Route
from overlay_hostgw import HostGwBackend

CFG = parse_config('{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"2001:db8:10::/48",'
                   '"Backend":{"Type":"host-gw"}}')
IFACE = ExternalInterface("eth0", 2, 1500, IPv4Address("192.0.2.1"), IPv6Address("2001:db8::1"),
                          IPv4Address("192.0.2.1"), IPv6Address("2001:db8::1"),
                          (ip_network("192.0.2.0/24"), ip_network("2001:db8::/64")))


def peer(ip, ip6, subnet="10.5.2.0/24", subnet6="2001:db8:10:2::/64"):
    return Lease(IPv4Network(subnet), IPv6Network(subnet6),
                 LeaseAttrs(IPv4Address(ip), IPv6Address(ip6), "host-gw"))


def test_adjacent_peer_gets_routes_via_its_public_ips():
    b = HostGwBackend(Node(CFG, IFACE, SimpleNamespace()))
    plan = b.plan(peer("192.0.2.2", "2001:db8::2"))
    assert plan.mode == "direct"
    assert plan.objects == (Route(IPv4Network("10.5.2.0/24"), IPv4Address("192.0.2.2"), 2),
                            Route(IPv6Network("2001:db8:10:2::/64"), IPv6Address("2001:db8::2"), 2))


def test_non_adjacent_peer_is_skipped_with_the_reason():
    b = HostGwBackend(Node(CFG, IFACE, SimpleNamespace()))
    plan = b.plan(peer("198.51.100.3", "2001:db8:1::3"))
    assert plan.mode == "skipped" and plan.objects == ()
    assert "198.51.100.3 is not on eth0's segment; host-gw needs layer-2 adjacency" in plan.reason
    b.peer_modes.record(peer("198.51.100.3", "2001:db8:1::3"), plan)
    assert b.overlay_report()["unreachable_peers"] == 1


def test_nat_is_refused():
    iface = ExternalInterface("eth0", 2, 1500, IPv4Address("192.0.2.1"), None, IPv4Address("203.0.113.1"))
    node = Node(CFG, iface, SimpleNamespace())
    with pytest.raises(ConfigError, match="differs from eth0's address"):
        HostGwBackend(node).overlay_network_config(CFG, node)
