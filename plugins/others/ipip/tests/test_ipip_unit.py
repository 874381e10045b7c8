"""ipip's desired state, pure: the device spec, adoption rules, routes and DirectRouting."""

from ipaddress import IPv4Address, IPv4Network, ip_network
from types import SimpleNamespace

import pytest
from overlay_core import ConfigError, Lease, LeaseAttrs, parse_config
from overlay_core.backend import ExternalInterface, Node
from overlay_core.dataplane.links import LinkInfo
from overlay_core.dataplane.objects import Route
from overlay_ipip import IpipBackend, TunnelSpec, create_attrs, why_not

IFACE = ExternalInterface("eth0", 2, 1500, IPv4Address("192.0.2.1"), None, IPv4Address("192.0.2.1"),
                          None, (ip_network("192.0.2.0/24"),))


def backend(options='{"Type":"ipip"}'):
    b = IpipBackend(Node(parse_config('{"Network":"10.5.0.0/16","Backend":%s}' % options), IFACE,
                         SimpleNamespace()))
    b.index = 7
    return b


def peer(ip, subnet):
    return Lease(IPv4Network(subnet), None, LeaseAttrs(IPv4Address(ip), None, "ipip"))


def test_device_spec_and_create_arguments():
    spec = backend().spec()
    assert spec == TunnelSpec("flannel.ipip", IPv4Address("192.0.2.1"), 2, 1480)
    assert create_attrs(spec) == {"ipip_local": "192.0.2.1",
                                   "ipip_remote": "0.0.0.0", "ipip_link": 2, "mtu": 1480}


def test_existing_device_adoption_rules():
    spec = backend().spec()
    ok = LinkInfo(7, "flannel.ipip", None, "ipip", {"IFLA_IPTUN_LOCAL": "192.0.2.1", "IFLA_IPTUN_REMOTE": "0.0.0.0"})
    assert why_not(spec, ok) is None
    assert why_not(spec, LinkInfo(7, "flannel.ipip", None, "ipip", {"IFLA_IPTUN_LOCAL": "192.0.2.9"})) \
        == "its local address is 192.0.2.9, not 192.0.2.1"
    assert "fixed remote" in why_not(spec, LinkInfo(7, "x", None, "ipip", {"IFLA_IPTUN_REMOTE": "192.0.2.5"}))
    assert why_not(spec, LinkInfo(7, "x", None, "vxlan")) == "it is a vxlan device"


def test_routes_through_the_tunnel_and_direct_routing():
    plan = backend().plan(peer("198.51.100.3", "10.5.3.0/24"))
    assert plan.mode == "ipip"
    assert plan.objects == (Route(IPv4Network("10.5.3.0/24"), IPv4Address("198.51.100.3"), 7, onlink=True),)
    assert backend().plan(peer("192.0.2.2", "10.5.2.0/24")).mode == "ipip"  # DirectRouting off
    direct = backend('{"Type":"ipip","DirectRouting":true}')
    assert direct.plan(peer("192.0.2.2", "10.5.2.0/24")).objects == (
        Route(IPv4Network("10.5.2.0/24"), IPv4Address("192.0.2.2"), 2),)
    assert direct.plan(peer("198.51.100.3", "10.5.3.0/24")).mode == "ipip"


def test_ipv6_and_bad_options_are_refused():
    with pytest.raises(ConfigError, match="ipip carries IPv4 only"):
        IpipBackend.parse_options(parse_config(
            '{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"2001:db8:10::/48","Backend":{"Type":"ipip"}}'))
    with pytest.raises(ConfigError, match="DirectRouting must be true or false"):
        IpipBackend.parse_options(parse_config('{"Network":"10.5.0.0/16","Backend":{"Type":"ipip","DirectRouting":"y"}}'))
