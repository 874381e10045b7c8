"""The Backend's pure parts: socket directory rule, plans, desired objects, per-peer status."""

import time
from ipaddress import IPv4Address, IPv6Address, ip_network
from pathlib import Path
from types import SimpleNamespace

from overlay_core import Lease, LeaseAttrs, parse_config
from overlay_core.backend import ExternalInterface, Node
from overlay_core.dataplane.objects import Route
from overlay_wireguard import WireguardBackend
from overlay_wireguard.backend import socket_dir
from overlay_wireguard.calc import Local
from overlay_wireguard.keys import KeyPair
from overlay_wireguard.peer import DeviceConfig, PeerState, WgPeer
from overlay_wireguard.target import WireguardDeviceTarget
from overlay_wireguard.uapi import UapiClient

ME = KeyPair.generate()
PEER = KeyPair.generate().public


def test_socket_dir_is_the_system_one_only_for_the_default_state_dir():
    assert socket_dir(Path("/run/overlay")) == Path("/var/run/wireguard")
    assert socket_dir(Path("/tmp/lab/n1/state")) == Path("/tmp/lab/n1/state/wireguard")


def backend(config: str, dual: bool = False) -> WireguardBackend:
    iface = ExternalInterface("eth0", 2, 1500, IPv4Address("192.0.2.1"), IPv6Address("2001:db8::1") if dual else None,
                              IPv4Address("192.0.2.1"), IPv6Address("2001:db8::1") if dual else None)
    node = Node(parse_config(config), iface, SimpleNamespace())
    b = WireguardBackend(node)
    b.overlay_network_config(node.config, node)
    b.keys = ME
    cfg = node.config
    b.local = Local(b.options, cfg.ipv4 is not None, cfg.ipv6 is not None, iface.public_ip, iface.public_ipv6,
                    ME.public)
    for name in ("flannel-wg", "flannel-wg-v6"):
        b.devices[name] = WireguardDeviceTarget(UapiClient(f"/nonexistent/{name}.sock", name))
    return b


DUAL = '{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"2001:db8:10::/48","Backend":{"Type":"wireguard"}}'


def lease(data=None) -> Lease:
    data = data if data is not None else {"PublicKey": PEER, "Port": 51820}
    attrs = LeaseAttrs(IPv4Address("192.0.2.2"), IPv6Address("2001:db8::2"), "wireguard", data,
                       {"PublicKey": PEER, "Port": 51821})
    return Lease(ip_network("10.5.2.0/24"), ip_network("2001:db8:10:2::/64"), attrs)


def test_plan_and_desired_objects():
    b = backend(DUAL, dual=True)
    assert b.mtu == 1420
    plan = b.plan(lease())
    assert plan.mode == "wireguard" and [(p.device, p.endpoint) for p in plan.objects] == [
        ("flannel-wg", "192.0.2.2:51820"), ("flannel-wg-v6", "[2001:db8::2]:51821")]
    bad = b.plan(lease({"PublicKey": "not a key"}))
    assert bad.mode == "skipped" and "BackendData has a PublicKey that is not base64" in bad.reason
    b.node.lease = Lease(ip_network("10.5.1.0/24"), ip_network("2001:db8:10:1::/64"), lease().attrs)
    b.index = {"flannel-wg": 7, "flannel-wg-v6": 8}
    desired = b.desired([lease()])
    assert DeviceConfig(ME.private, 51820, "flannel-wg") in desired
    assert DeviceConfig(ME.private, 51821, "flannel-wg-v6") in desired
    assert Route(ip_network("10.5.0.0/16"), None, 7) in desired
    assert Route(ip_network("2001:db8:10::/48"), None, 8) in desired
    assert sum(isinstance(o, WgPeer) for o in desired) == 2


def test_peer_status_per_lease_combines_both_devices():
    b = backend(DUAL, dual=True)
    peer = lease()
    b.overlay_peer_status()  # nothing planned yet: nothing to say
    b._objects([peer])
    v4, v6 = b.plan(peer).objects
    now = time.time()
    b.devices["flannel-wg"].last_status = (PeerState(v4, now - 10, 100, 200),)
    b.devices["flannel-wg-v6"].last_status = (PeerState(v6, now - 200, 1, 2),)
    status = b.overlay_peer_status()["10.5.2.0-24&2001:db8:10:2::-64"]
    assert status.state == "stale"  # the worse of up (v4) and stale (v6)
    assert status.detail["mode"] == "wireguard" and status.detail["rx_bytes"] == 101
    assert status.detail["tx_bytes"] == 202 and status.detail["handshake_age_s"] >= 200
    assert status.detail["endpoint"] == "192.0.2.2:51820, [2001:db8::2]:51821"
    b.devices["flannel-wg-v6"].last_status = ()
    only_v4 = b.overlay_peer_status()["10.5.2.0-24&2001:db8:10:2::-64"]
    assert only_v4.state == "up" and only_v4.detail["device"] == "flannel-wg"
