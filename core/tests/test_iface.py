from ipaddress import IPv4Address, IPv6Address, ip_address

import pytest
from overlay_core.errors import InterfaceError
from overlay_core.iface import IFA_F_DEPRECATED, Addr, IfaceOptions, Link, Snapshot, select_interface

LO = Link("lo", 1, 65536, (Addr(ip_address("127.0.0.1")), Addr(ip_address("::1"))))
ETH = Link("eth0", 2, 1500, (Addr(ip_address("fe80::1")), Addr(ip_address("192.0.2.7")),
                             Addr(ip_address("2001:db8::7")), Addr(ip_address("2001:db8::dead"), IFA_F_DEPRECATED)))
DUMMY = Link("dummy0", 3, 1400, (Addr(ip_address("192.168.200.128")), Addr(ip_address("2001:db8:1::1"))))
SNAP = Snapshot((LO, ETH, DUMMY), default_v4=2, default_v6=2)


def test_default_route_interface():
    ext = select_interface(SNAP, IfaceOptions())
    assert (ext.name, ext.mtu, ext.address, ext.public_ip) == ("eth0", 1500, IPv4Address("192.0.2.7"),
                                                               IPv4Address("192.0.2.7"))


def test_dual_stack_prefers_global_non_deprecated():
    ext = select_interface(SNAP, IfaceOptions(ipv6=True))
    assert ext.address_v6 == IPv6Address("2001:db8::7") and ext.public_ipv6 == ext.address_v6


def test_by_name_by_ip_and_public_ip_override():
    assert select_interface(SNAP, IfaceOptions(ifaces=("dummy0",))).address == IPv4Address("192.168.200.128")
    ext = select_interface(SNAP, IfaceOptions(ifaces=("nope", "192.168.200.128"), public_ip="203.0.113.5"))
    assert ext.name == "dummy0" and ext.public_ip == IPv4Address("203.0.113.5")
    ext6 = select_interface(SNAP, IfaceOptions(ifaces=("2001:db8:1::1",), ipv4=False, ipv6=True))
    assert ext6.name == "dummy0" and ext6.address_v6 == IPv6Address("2001:db8:1::1")


def test_regex_over_ips_then_names():
    assert select_interface(SNAP, IfaceOptions(regexes=(r"192\.168\.200\.\d+",))).name == "dummy0"
    assert select_interface(SNAP, IfaceOptions(regexes=(r"dummy\d+",))).name == "dummy0"


def test_can_reach_uses_route_lookup():
    snap = Snapshot(SNAP.links, 2, 2, reach=(3, ip_address("192.168.200.128")))
    assert select_interface(snap, IfaceOptions(can_reach="172.16.32.254")).name == "dummy0"


def test_public_ip_alone_must_be_local():
    assert select_interface(SNAP, IfaceOptions(public_ip="192.0.2.7")).name == "eth0"
    with pytest.raises(InterfaceError, match="behind NAT, also pass --iface"):
        select_interface(SNAP, IfaceOptions(public_ip="203.0.113.1"))


@pytest.mark.parametrize("opts, message", [
    (IfaceOptions(ifaces=("wlan9",)), "no interface matches 'wlan9'; interfaces here: lo:"),
    (IfaceOptions(regexes=("(",)), "not a valid regular expression"),
    (IfaceOptions(ifaces=("lo",)), "failed to find an IPv4 address for interface lo"),
    (IfaceOptions(ifaces=("eth0",), public_ip="2001:db8::1"), "must be an IPv4 address"),
])
def test_errors_are_one_line(opts, message):
    with pytest.raises(InterfaceError) as info:
        select_interface(SNAP, opts)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_no_default_route():
    with pytest.raises(InterfaceError, match="no default route"):
        select_interface(Snapshot((LO, ETH)), IfaceOptions())
