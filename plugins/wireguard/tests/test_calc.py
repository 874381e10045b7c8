"""Pure policy: devices per mode, Flannel-compatible lease data, endpoint choice, the port quirk fix."""

import base64
from ipaddress import IPv4Address, IPv6Address, ip_interface, ip_network

import pytest
from overlay_core import Lease, LeaseAttrs
from overlay_core.lease import lease_from_kv
from overlay_core.services import Secret
from overlay_wireguard.calc import (
    DEVICE,
    DEVICE_V6,
    Local,
    choose_family,
    desired_peers,
    device_layouts,
    devices,
    lease_data,
    plan_peer,
)
from overlay_wireguard.keys import KeyPair
from overlay_wireguard.options import WgOptions

K1 = KeyPair.generate().public
K2 = KeyPair.generate().public
OWN = KeyPair.generate().public
V4 = IPv4Address("192.0.2.1")
V6 = IPv6Address("2001:db8::1")


def local(mode="separate", ipv4=True, ipv6=True, v4=V4, v6=V6, **opts):
    return Local(WgOptions(mode=mode, **opts), ipv4, ipv6, v4, v6, OWN)


def lease(subnet="10.5.2.0/24", subnet6="2001:db8:10:2::/64", ip="192.0.2.2", ip6="2001:db8::2",
          data=None, data6=None, key=K1, port=51820, port6=51821, btype="wireguard", rev=1):
    if data is None and subnet:
        data = {"PublicKey": key, "Port": port}
    if data6 is None and subnet6:
        data6 = {"PublicKey": key, "Port": port6}
    attrs = LeaseAttrs(IPv4Address(ip) if ip else IPv4Address("0.0.0.0"), IPv6Address(ip6) if ip6 else None, btype,
                       data if subnet else None, data6 if subnet6 else None)
    return Lease(ip_network(subnet) if subnet else None, ip_network(subnet6) if subnet6 else None, attrs, rev, 7)


def only(plan):
    assert plan.skipped is None, plan.skipped
    assert len(plan.peers) == 1
    return plan.peers[0].device, plan.peers[0]


def test_devices_per_mode():
    assert [(d.name, d.port, d.families) for d in devices(local())] == [(DEVICE, 51820, (4,)), (DEVICE_V6, 51821, (6,))]
    assert [d.name for d in devices(local(ipv6=False))] == [DEVICE]
    assert [(d.name, d.port) for d in devices(local(ipv4=False))] == [(DEVICE_V6, 51821)]
    for mode in ("auto", "ipv4", "ipv6"):
        assert [(d.name, d.port, d.families) for d in devices(local(mode))] == [(DEVICE, 51820, (4, 6))]
        assert [(d.name, d.families) for d in devices(local(mode, ipv4=False))] == [(DEVICE, (6,))]


def test_lease_bytes_identical_to_flannel():
    pub = "Xx1E4mVAZ0r6TsZ8S9dVmUOG2PPBhO5Ii1Wdu3Gwmgg="
    d4, d6 = lease_data(local(), pub)
    attrs = LeaseAttrs(V4, V6, "wireguard", d4, d6)
    assert attrs.to_json() == (
        '{"PublicIP":"192.0.2.1","PublicIPv6":"2001:db8::1","BackendType":"wireguard",'
        f'"BackendData":{{"PublicKey":"{pub}","Port":51820}},"BackendV6Data":{{"PublicKey":"{pub}","Port":51821}}}}')
    d4, d6 = lease_data(local(ipv6=False), pub)
    assert LeaseAttrs(V4, None, "wireguard", d4, d6).to_json() == (
        f'{{"PublicIP":"192.0.2.1","PublicIPv6":null,"BackendType":"wireguard","BackendData":{{"PublicKey":"{pub}",'
        '"Port":51820}}')


def test_single_device_advertises_its_real_port_in_both():
    assert lease_data(local("ipv6"), K1) == ({"PublicKey": K1, "Port": 51820}, {"PublicKey": K1, "Port": 51820})
    assert lease_data(local("auto", ipv4=False), K1) == (None, {"PublicKey": K1, "Port": 51820})


def test_separate_dual_stack_two_peers():
    plan = plan_peer(local(psk=Secret(b"p" * 32), keepalive=25), lease())
    assert plan.skipped is None
    p4, p6 = plan.peers
    assert (p4.device, p4.endpoint, p4.allowed_ips) == (DEVICE, "192.0.2.2:51820", (ip_network("10.5.2.0/24"),))
    assert (p6.device, p6.endpoint, p6.allowed_ips) == (DEVICE_V6, "[2001:db8::2]:51821",
                                                 (ip_network("2001:db8:10:2::/64"),))
    assert p4.key == p6.key == K1 and p4.keepalive == 25 and p4.psk == Secret(b"p" * 32)


@pytest.mark.parametrize("peer_v4, peer_v6, own_v4, own_v6, family", [
    ("203.0.113.2", None, V4, V6, 4),                   # peer has no IPv6
    ("10.0.0.2", "2001:db8::2", V4, V6, 6),             # private IPv4, both IPv6 global
    ("192.168.1.2", "2001:db8::2", V4, V6, 6),
    ("172.31.0.2", "2001:db8::2", V4, V6, 6),
    ("172.32.0.2", "2001:db8::2", V4, V6, 4),           # outside 172.16/12: not RFC 1918
    ("192.0.2.2", "2001:db8::2", V4, V6, 4),            # public IPv4 and we have IPv4
    ("10.0.0.2", "fd00::2", V4, V6, 4),                 # peer IPv6 is ULA
    ("10.0.0.2", "2001:db8::2", V4, IPv6Address("fd00::1"), 4),  # our IPv6 is ULA
    ("10.0.0.2", "2001:db8::2", V4, None, 4),           # we have no IPv6
    ("203.0.113.2", "2001:db8::2", None, V6, 6),        # we have no IPv4
    (None, "2001:db8::2", V4, V6, 6),                   # peer has no IPv4 (Flannel would dial 0.0.0.0)
])
def test_auto_endpoint_choice(peer_v4, peer_v6, own_v4, own_v6, family):
    loc = local("auto", v4=own_v4, v6=own_v6)
    assert choose_family(loc, IPv4Address(peer_v4) if peer_v4 else None,
                         IPv6Address(peer_v6) if peer_v6 else None) == family
    dev, peer = only(plan_peer(loc, lease(ip=peer_v4, ip6=peer_v6)))
    assert dev == DEVICE
    assert peer.endpoint == (f"{peer_v4}:51820" if family == 4 else f"[{peer_v6}]:51820")
    assert peer.allowed_ips == (ip_network("10.5.2.0/24"), ip_network("2001:db8:10:2::/64"))


@pytest.mark.parametrize("mode, endpoint", [("ipv4", "192.0.2.2:51820"), ("ipv6", "[2001:db8::2]:51820")])
def test_fixed_modes(mode, endpoint):
    assert only(plan_peer(local(mode), lease()))[1].endpoint == endpoint


def test_quirk_fix_single_device_port():
    """A Flannel node in ipv6 mode advertises BackendV6Data Port 51821 but listens on 51820."""
    flannel = lease(port=51820, port6=51821)
    assert only(plan_peer(local("ipv6"), flannel))[1].endpoint == "[2001:db8::2]:51820"
    # IPv6-only network: only BackendV6Data, Flannel's quirk value read as ListenPort
    v6only = lease(subnet=None, ip=None, port6=51821)
    assert only(plan_peer(local("ipv6", ipv4=False), v6only))[1].endpoint == "[2001:db8::2]:51820"
    # an overlay node advertises the real port
    ours = lease(subnet=None, ip=None, port6=51820)
    assert only(plan_peer(local("ipv6", ipv4=False), ours))[1].endpoint == "[2001:db8::2]:51820"
    # ports configured equal (how Flannel users work around it): unchanged
    same = lease(port=6000, port6=6000)
    assert only(plan_peer(local("ipv6", listen_port=6000, listen_port_v6=6000), same))[1].endpoint \
        == "[2001:db8::2]:6000"
    # another port than the network's ListenPortV6 is taken as it is
    other = lease(subnet=None, ip=None, port6=7000)
    assert only(plan_peer(local("ipv6", ipv4=False), other))[1].endpoint == "[2001:db8::2]:7000"
    # separate mode has no quirk: BackendV6Data's port is flannel-wg-v6's
    assert plan_peer(local(), flannel).peers[1].endpoint == "[2001:db8::2]:51821"


def test_port_zero_means_our_port():
    old = lease(port=0, port6=0)
    p4, p6 = plan_peer(local(listen_port=5000, listen_port_v6=5001), old).peers
    assert (p4.endpoint, p6.endpoint) == ("192.0.2.2:5000", "[2001:db8::2]:5001")
    assert only(plan_peer(local("ipv6", listen_port=5000), old))[1].endpoint == "[2001:db8::2]:5000"
    no_port = lease(data={"PublicKey": K1}, subnet6=None, ip6=None)
    assert only(plan_peer(local(ipv6=False), no_port))[1].endpoint == "192.0.2.2:51820"


def test_flannel_written_values_decode_into_working_peers():
    k = "rUbcDSK3Fm+WGeobIsjYzIz8EN+7cNtg8kvnpgyzBQ8="
    dual = (b'{"PublicIP":"192.0.2.7","PublicIPv6":"2001:db8::7","BackendType":"wireguard",'
            b'"BackendData":{"PublicKey":"' + k.encode() + b'","Port":51820},'
            b'"BackendV6Data":{"PublicKey":"' + k.encode() + b'","Port":51821}}')
    le = lease_from_kv("/coreos.com/network/subnets/10.5.7.0-24&2001:db8:10:7::-64", dual, 9, 3)
    p4, p6 = plan_peer(local(), le).peers
    assert (p4.device, p4.key, p4.endpoint, p4.allowed_ips) == (DEVICE, k, "192.0.2.7:51820",
                                                                (ip_network("10.5.7.0/24"),))
    assert (p6.device, p6.endpoint) == (DEVICE_V6, "[2001:db8::7]:51821")
    dev, p = only(plan_peer(local("auto"), le))
    assert p.endpoint == "192.0.2.7:51820" and len(p.allowed_ips) == 2
    old = b'{"PublicIP":"192.0.2.8","PublicIPv6":null,"BackendType":"wireguard","BackendData":{"PublicKey":"%s"}}'
    le = lease_from_kv("10.5.8.0-24", old % k.encode())
    assert only(plan_peer(local(ipv6=False), le))[1].endpoint == "192.0.2.8:51820"


@pytest.mark.parametrize("bad, reason", [
    (dict(data={"PublicKey": "short"}), "its BackendData has a PublicKey that is not base64"),
    (dict(data={"PublicKey": base64.b64encode(b"x" * 16).decode()}), "decodes to 16 bytes"),
    (dict(data={"Port": 51820}), "its BackendData has no PublicKey"),
    (dict(data="a string"), "its BackendData is not a JSON object"),
    (dict(data={"PublicKey": K1, "Port": 70000}), "has Port 70000"),
    (dict(data={"PublicKey": K1, "Port": True}), "has Port True"),
    (dict(data={"PublicKey": K1, "Port": "1"}), "has Port '1'"),
    (dict(data6={"PublicKey": K2, "Port": 1}), "carry different public keys"),
    (dict(btype="vxlan"), "its backend is 'vxlan', not wireguard"),
    (dict(key=OWN), "this node's own public key"),
    (dict(ip6=None), "no IPv6 public address for flannel-wg-v6"),
])
def test_malformed_leases_are_skipped_with_reason(bad, reason):
    plan = plan_peer(local(), lease(**bad))
    assert plan.peers == () and reason in plan.skipped


def test_missing_data_and_fixed_mode_without_address():
    plan = plan_peer(local(ipv6=False), Lease(ip_network("10.5.3.0/24"), None, LeaseAttrs(V4, None, "wireguard")))
    assert "no subnet with wireguard data" in plan.skipped
    assert "Mode ipv6 dials IPv6 and it has no IPv6 public address" in plan_peer(local("ipv6"), lease(ip6=None)).skipped
    assert "Mode ipv4 dials IPv4" in plan_peer(local("ipv4"), lease(ip=None)).skipped


def test_fuzz_never_raises():
    weird = [None, 1, "x", [], {}, {"PublicKey": None}, {"publickey": K1, "port": None}, {"PUBLICKEY": K1},
             {"PublicKey": K1, "Port": -1}, {"PublicKey": K1 + "=", "Port": 1}, {"PublicKey": 5}]
    for mode in ("separate", "auto", "ipv4", "ipv6"):
        for d4 in weird:
            for d6 in weird:
                attrs = LeaseAttrs(V4, V6, "wireguard", d4, d6)
                plan = plan_peer(local(mode), Lease(ip_network("10.5.9.0/24"), ip_network("2001:db8:10:9::/64"),
                                                    attrs))
                assert bool(plan.peers) != bool(plan.skipped)


def test_desired_set_newest_duplicate_wins_and_own_lease_skipped():
    loc = local(ipv6=False)
    older = lease(subnet="10.5.2.0/24", subnet6=None, ip6=None, rev=5)
    newer = lease(subnet="10.5.4.0/24", subnet6=None, ip6=None, ip="192.0.2.4", rev=9)
    other = lease(subnet="10.5.3.0/24", subnet6=None, ip6=None, ip="192.0.2.3", key=K2, rev=7)
    mine = lease(subnet="10.5.1.0/24", subnet6=None, ip6=None, ip="192.0.2.1", key=K2, rev=8)
    want = desired_peers(loc, [newer, other, older, mine], own_key=mine.key)
    assert set(want.peers) == {DEVICE}
    assert {k: p.endpoint for k, p in want.peers[DEVICE].items()} == {K1: "192.0.2.4:51820", K2: "192.0.2.3:51820"}
    assert want.skipped == {older.key: f"lease {newer.key} has the same public key and is newer"}


def test_device_layouts_as_flannel():
    own = lease(subnet="10.5.1.0/24", subnet6="2001:db8:10:1::/64")
    net4, net6 = ip_network("10.5.0.0/16"), ip_network("2001:db8:10::/56")
    sep = device_layouts(local(), own, net4, net6, 1420)
    assert [(d.name, d.port, d.addresses, d.routes, d.mtu) for d in sep] == [
        (DEVICE, 51820, (ip_interface("10.5.1.0/32"),), (net4,), 1420),
        (DEVICE_V6, 51821, (ip_interface("2001:db8:10:1::/128"),), (net6,), 1420)]
    (single,) = device_layouts(local("auto"), own, net4, net6, 1420)
    assert single.addresses == (ip_interface("10.5.1.0/32"), ip_interface("2001:db8:10:1::/128"))
    assert single.routes == (net4, net6)
