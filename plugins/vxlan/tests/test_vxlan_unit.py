"""Pure tests of the vxlan backend: options, device compatibility, per-peer desired state."""

from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_network
from types import SimpleNamespace

import pytest
from overlay_core import ConfigError, Lease, LeaseAttrs, parse_config
from overlay_core.backend import ExternalInterface, Node
from overlay_core.dataplane.objects import FdbEntry, Neighbour, Route
from overlay_vxlan import VxlanBackend
from overlay_vxlan.device import DeviceSpec, DeviceState, incompatible, random_mac
from overlay_vxlan.options import device_mtus, parse_options


def cfg(backend: str, extra: str = "") -> object:
    return parse_config('{"Network":"10.5.0.0/16"%s,"Backend":%s}' % (extra, backend))


def test_defaults():
    o = parse_options(cfg('{"Type":"vxlan"}'))
    assert (o.vni, o.port, o.gbp, o.direct_routing, o.mtu, o.device) == (1, 8472, False, False, None, "flannel.1")
    assert parse_options(cfg('{"Type":"vxlan","vni":42,"PORT":4789}')).device_v6 == "flannel-v6.42"


@pytest.mark.parametrize("backend, message", [
    ('{"Type":"vxlan","VNI":0}', "VNI must be a whole number from 1 to 16777215, got 0"),
    ('{"Type":"vxlan","VNI":16777216}', "VNI must be a whole number from 1 to 16777215"),
    ('{"Type":"vxlan","VNI":"1"}', "VNI must be a whole number"),
    ('{"Type":"vxlan","Port":70000}', "Port must be a whole number from 0 to 65535"),
    ('{"Type":"vxlan","GBP":"yes"}', "GBP must be true or false"),
    ('{"Type":"vxlan","DirectRouting":1}', "DirectRouting must be true or false"),
    ('{"Type":"vxlan","MTU":10}', "MTU must be a whole number from 118"),
])
def test_bad_options(backend, message):
    with pytest.raises(ConfigError, match=message):
        parse_options(cfg(backend))


def test_mtu_floor_is_higher_with_ipv6_and_port_0_means_the_default():
    with pytest.raises(ConfigError, match="vxlan: MTU must be a whole number from 1350 to 65535 with IPv6, got 1300"):
        parse_options(cfg('{"Type":"vxlan","MTU":1300}', ',"EnableIPv6":true,"IPv6Network":"2001:db8::/56"'))
    assert parse_options(cfg('{"Type":"vxlan","MTU":1300}')).mtu == 1300
    assert parse_options(cfg('{"Type":"vxlan","Port":0}')).port == 8472


def test_mac_prefix_is_accepted_and_warned(caplog):
    parse_options(cfg('{"Type":"vxlan","MacPrefix":"0E-2A"}'))
    assert "MacPrefix only applies to Windows" in caplog.text


def test_mtu_is_the_underlay_mtu_as_in_flannel():
    def mtus(backend, v6=False):
        return device_mtus(parse_options(cfg(backend)), 1500, "eth0", True, v6)

    assert mtus('{"Type":"vxlan"}', v6=True) == (1450, 1430)  # default: the interface's MTU
    assert mtus('{"Type":"vxlan","MTU":1400}') == (1350, None)  # Flannel: 1400 -> 1350
    assert mtus('{"Type":"vxlan","MTU":1500}') == (1450, None)  # a Flannel config for a 1500 link starts
    assert mtus('{"Type":"vxlan","MTU":1500}', v6=True) == (1450, 1430)
    with pytest.raises(ConfigError, match="MTU 9000 is more than eth0's MTU 1500; MTU is the underlay's"):
        mtus('{"Type":"vxlan","MTU":9000}')


def test_flannel_mtu_is_the_device_mtu_of_the_lease_request():
    backend = VxlanBackend(Node(cfg('{"Type":"vxlan","MTU":1400}'), ExternalInterface("eth0", 2, 1500),
                                SimpleNamespace()))
    backend.overlay_network_config(backend.node.config, SimpleNamespace(iface=ExternalInterface(
        "eth0", 2, 1500, public_ip=IPv4Address("192.0.2.1"))))
    assert backend.mtu == {4: 1350}


def test_unknown_backend_key_is_refused_with_a_suggestion():
    node = Node(cfg('{"Type":"vxlan","DirectRoute":true}'), ExternalInterface("eth0", 2, 1500), SimpleNamespace())
    with pytest.raises(ConfigError, match="vxlan: unknown Backend key 'DirectRoute' \\(did you mean 'DirectRouting'"):
        VxlanBackend(node)


def test_device_compatibility():
    spec = DeviceSpec("flannel.1", 1, IPv4Address("192.0.2.1"), 2, 8472, False, False, 1450)
    same = DeviceState(3, "02:00:00:00:00:01", "vxlan", 1, IPv4Address("192.0.2.1"), 2, 8472, False, False)
    assert incompatible(spec, same) is None
    assert incompatible(spec, DeviceState(3, "x", "bridge")) == "it is a bridge device"
    assert incompatible(spec, DeviceState(3, "x", "vxlan", 7, IPv4Address("192.0.2.1"), 2, 8472, False)) \
        == "its VNI is 7, not 1"
    other_local = DeviceState(3, "x", "vxlan", 1, IPv4Address("192.0.2.9"), 2, 8472, False)
    assert "local address" in incompatible(spec, other_local)
    assert "port" in incompatible(spec, DeviceState(3, "x", "vxlan", 1, IPv4Address("192.0.2.1"), 2, 4789, False))
    mac = random_mac()
    assert int(mac[:2], 16) & 0b11 == 0b10  # locally administered, unicast


def backend(options='{"Type":"vxlan"}', dual=False):
    extra = ',"EnableIPv6":true,"IPv6Network":"2001:db8:10::/48"' if dual else ""
    config = cfg(options, extra)
    iface = ExternalInterface("eth0", 2, 1500, IPv4Address("192.0.2.1"), None, IPv4Address("192.0.2.1"),
                              IPv6Address("2001:db8::1") if dual else None,
                              (ip_network("192.0.2.0/24"), ip_network("2001:db8::/64")))
    b = VxlanBackend(Node(config, iface, SimpleNamespace()))
    b.index = {4: 5, 6: 6} if dual else {4: 5}
    return b


def peer(ip, subnet, mac="aa:bb:cc:dd:ee:ff", v6=None):
    data = {"VNI": 1, "VtepMAC": mac} if mac else None
    attrs = LeaseAttrs(IPv4Address(ip), IPv6Address("2001:db8::2") if v6 else None, "vxlan", data,
                       {"VNI": 1, "VtepMAC": "aa:bb:cc:dd:ee:01"} if v6 else None)
    return Lease(IPv4Network(subnet), IPv6Network(v6) if v6 else None, attrs)


def test_plan_encapsulated_peer():
    plan = backend().plan(peer("192.0.2.2", "10.5.2.0/24", "AA:BB:CC:DD:EE:FF"))
    assert plan.mode == "vxlan"
    assert plan.objects == (FdbEntry(5, "aa:bb:cc:dd:ee:ff", IPv4Address("192.0.2.2")),
                            Neighbour(5, IPv4Address("10.5.2.0"), "aa:bb:cc:dd:ee:ff"),
                            Route(IPv4Network("10.5.2.0/24"), IPv4Address("10.5.2.0"), 5, onlink=True))


def test_plan_direct_routing_only_for_peers_on_the_segment():
    b = backend('{"Type":"vxlan","DirectRouting":true}')
    near = b.plan(peer("192.0.2.2", "10.5.2.0/24"))
    assert near.mode == "direct" and near.objects == (Route(IPv4Network("10.5.2.0/24"), IPv4Address("192.0.2.2"), 2),)
    assert b.plan(peer("198.51.100.3", "10.5.3.0/24")).mode == "vxlan"


def test_plan_dual_stack_and_skips():
    b = backend(dual=True)
    plan = b.plan(peer("192.0.2.2", "10.5.2.0/24", v6="2001:db8:10:2::/64"))
    assert plan.mode == "vxlan" and len(plan.objects) == 6
    assert Route(IPv6Network("2001:db8:10:2::/64"), IPv6Address("2001:db8:10:2::"), 6, True) in plan.objects
    skipped = backend().plan(peer("192.0.2.2", "10.5.2.0/24", mac=None))
    assert skipped.mode == "skipped" and "no valid VtepMAC" in skipped.reason and not skipped.objects
