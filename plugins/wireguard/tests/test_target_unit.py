"""The reconcile target's routing and diff, without wireguard-go."""

from ipaddress import IPv4Address, IPv6Address, ip_network

from overlay_core import Lease, LeaseAttrs
from overlay_core.reconcile import diff
from overlay_wireguard.calc import DEVICE, DEVICE_V6, Local, desired_peers
from overlay_wireguard.keys import KeyPair
from overlay_wireguard.options import WgOptions
from overlay_wireguard.peer import DeviceConfig, WgPeer, allowed_ips
from overlay_wireguard.target import WireguardDeviceTarget
from overlay_wireguard.uapi import UapiClient

A = KeyPair.generate().public
B = KeyPair.generate().public


def test_objects_are_routed_to_their_device():
    v4 = WireguardDeviceTarget(UapiClient("/nonexistent/flannel-wg.sock", DEVICE))
    v6 = WireguardDeviceTarget(UapiClient("/nonexistent/flannel-wg-v6.sock", DEVICE_V6))
    p4 = WgPeer(A, "192.0.2.2:51820", allowed_ips(["10.5.2.0/24"]), device=DEVICE)
    p6 = WgPeer(A, "[2001:db8::2]:51821", allowed_ips(["2001:db8:10:2::/64"]), device=DEVICE_V6)
    assert (v4.accepts(p4), v4.accepts(p6), v6.accepts(p6), v6.accepts(p4)) == (True, False, True, False)
    assert v4.accepts(DeviceConfig(None, 1, DEVICE)) and not v4.accepts("something else")
    assert v4.name == "wireguard:flannel-wg"


def test_diff_by_key_with_replace_semantics():
    config = DeviceConfig(None, 51820, DEVICE)
    a = WgPeer(A, "192.0.2.2:51820", allowed_ips(["10.5.2.0/24"]), device=DEVICE)
    a_moved = WgPeer(A, "192.0.2.9:51820", allowed_ips(["10.5.2.0/24"]), device=DEVICE)
    b = WgPeer(B, "192.0.2.3:51820", allowed_ips(["10.5.3.0/24"]), device=DEVICE)
    target = WireguardDeviceTarget(UapiClient("/nonexistent/flannel-wg.sock", DEVICE))
    assert diff([config, a_moved], [config, a, b], target.owns) == ([a_moved], [b])
    assert diff([config, a], [config, a], target.owns) == ([], [])


def test_desired_peers_carry_their_device():
    local = Local(WgOptions(), True, True, None, None, KeyPair.generate().public)
    attrs = LeaseAttrs(IPv4Address("192.0.2.2"), IPv6Address("2001:db8::2"), "wireguard",
                       {"PublicKey": A, "Port": 51820}, {"PublicKey": A, "Port": 51821})
    want = desired_peers(local, [Lease(ip_network("10.5.2.0/24"), ip_network("2001:db8:10:2::/64"), attrs)])
    assert {dev: [p.device for p in peers.values()] for dev, peers in want.peers.items()} == {
        DEVICE: [DEVICE], DEVICE_V6: [DEVICE_V6]}
