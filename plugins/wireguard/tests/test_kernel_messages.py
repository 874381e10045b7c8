"""The kernel path down to its netlink messages (this machine has no wireguard module)."""

import os
from ipaddress import ip_network
from socket import AF_INET, AF_INET6

import pytest
from overlay_core.services import Secret
from overlay_wireguard import kernel
from overlay_wireguard.keys import KeyPair
from overlay_wireguard.peer import DeviceConfig, WgPeer, allowed_ips
from pyroute2.netlink import NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST
from pyroute2.netlink.generic.wireguard import (
    WG_CMD_GET_DEVICE,
    WG_CMD_SET_DEVICE,
    WGDEVICE_F_REPLACE_PEERS,
    WGPEER_F_REMOVE_ME,
    WGPEER_F_REPLACE_ALLOWEDIPS,
    wgmsg,
)
from pyroute2.netlink.rtnl import RTM_NEWLINK
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

ME = KeyPair.generate()
FAMILY = 0x1F  # the genl family id is only known at run time; any value for encoding


def decoded(msg, cls):
    out = cls(msg.data)
    out.decode()
    return out


def test_link_create():
    msg = decoded(kernel.link_create_message("flannel-wg", 1420), ifinfmsg)
    assert msg["header"]["type"] == RTM_NEWLINK
    assert msg["header"]["flags"] == NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL
    assert (msg.get_attr("IFLA_IFNAME"), msg.get_attr("IFLA_MTU")) == ("flannel-wg", 1420)
    assert msg.get_attr("IFLA_LINKINFO").get_attr("IFLA_INFO_KIND") == "wireguard"


def test_set_device_with_peers_and_removal():
    a, b = KeyPair.generate().public, KeyPair.generate().public
    peer = WgPeer(a, "[2001:db8::2]:51821", allowed_ips(["10.5.2.0/24", "2001:db8:10:2::/64"]), Secret(b"s" * 32), 25)
    (msg,) = kernel.set_device_messages("flannel-wg", FAMILY, DeviceConfig(ME.private, 51820), [peer], remove=[b],
                                        replace_peers=True)
    m = decoded(msg, wgmsg)
    assert (m["cmd"], m["header"]["type"], m["header"]["flags"]) == (WG_CMD_SET_DEVICE, FAMILY,
                                                                    NLM_F_REQUEST | NLM_F_ACK)
    assert m.get_attr("WGDEVICE_A_IFNAME") == "flannel-wg"
    assert m.get_attr("WGDEVICE_A_PRIVATE_KEY").decode() == ME.private_b64()
    assert m.get_attr("WGDEVICE_A_LISTEN_PORT") == 51820
    assert m.get_attr("WGDEVICE_A_FLAGS") == WGDEVICE_F_REPLACE_PEERS
    removed, added = m.get_attr("WGDEVICE_A_PEERS")
    assert removed.get_attr("WGPEER_A_PUBLIC_KEY").decode() == b
    assert removed.get_attr("WGPEER_A_FLAGS") == WGPEER_F_REMOVE_ME
    assert added.get_attr("WGPEER_A_PUBLIC_KEY").decode() == a
    assert added.get_attr("WGPEER_A_FLAGS") == WGPEER_F_REPLACE_ALLOWEDIPS
    assert added.get_attr("WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL") == 25
    ep = added.get_attr("WGPEER_A_ENDPOINT")
    assert (ep["family"], ep["addr"], ep["port"]) == (AF_INET6, "2001:db8::2", 51821)
    ips = [(i.get_attr("WGALLOWEDIP_A_FAMILY"), i["addr"]) for i in added.get_attr("WGPEER_A_ALLOWEDIPS")]
    assert ips == [(AF_INET, "10.5.2.0/24"), (AF_INET6, "2001:db8:10:2::/64")]
    assert ME.private_b64() not in repr(DeviceConfig(ME.private, 1))


def test_many_peers_split_settings_on_first_only():
    peers = [WgPeer(KeyPair.generate().public, f"192.0.2.{i + 1}:51820", allowed_ips([f"10.5.{i}.0/24"]))
             for i in range(70)]
    msgs = [decoded(m, wgmsg) for m in kernel.set_device_messages("flannel-wg", FAMILY, DeviceConfig(ME.private, 1),
                                                                     peers, replace_peers=True)]
    assert [len(m.get_attr("WGDEVICE_A_PEERS")) for m in msgs] == [32, 32, 6]
    assert [m.get_attr("WGDEVICE_A_LISTEN_PORT") for m in msgs] == [1, None, None]
    assert [m.get_attr("WGDEVICE_A_FLAGS") for m in msgs] == [WGDEVICE_F_REPLACE_PEERS, None, None]
    keys = [p.get_attr("WGPEER_A_PUBLIC_KEY").decode() for m in msgs for p in m.get_attr("WGDEVICE_A_PEERS")]
    assert keys == [p.public_key for p in peers]
    assert len(kernel.set_device_messages("flannel-wg", FAMILY, DeviceConfig(ME.private, 1))) == 1


def test_get_request_and_reply_parse_like_uapi():
    req = decoded(kernel.get_device_message("flannel-wg", FAMILY), wgmsg)
    assert req["cmd"] == WG_CMD_GET_DEVICE and req["header"]["flags"] == NLM_F_REQUEST | NLM_F_DUMP
    a = KeyPair.generate().public
    # a reply as the kernel sends it, split in two messages with the peer continued in the second
    first = wgmsg()
    first["attrs"] = [["WGDEVICE_A_IFNAME", "flannel-wg"], ["WGDEVICE_A_PRIVATE_KEY", ME.private_b64()],
                      ["WGDEVICE_A_LISTEN_PORT", 51820],
                      ["WGDEVICE_A_PEERS", [{"attrs": [
                          ["WGPEER_A_PUBLIC_KEY", a], ["WGPEER_A_ENDPOINT", {"addr": "192.0.2.2", "port": 51820}],
                          ["WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL", 0], ["WGPEER_A_RX_BYTES", 10],
                          ["WGPEER_A_TX_BYTES", 20],
                          ["WGPEER_A_ALLOWEDIPS", [{"attrs": [["WGALLOWEDIP_A_FAMILY", AF_INET],
                                                              ["WGALLOWEDIP_A_IPADDR", bytes([10, 5, 2, 0])],
                                                              ["WGALLOWEDIP_A_CIDR_MASK", 24]]}]]]}]]]
    second = wgmsg()
    second["attrs"] = [["WGDEVICE_A_IFNAME", "flannel-wg"], ["WGDEVICE_A_PEERS", [{"attrs": [
        ["WGPEER_A_PUBLIC_KEY", a],
        ["WGPEER_A_ALLOWEDIPS", [{"attrs": [["WGALLOWEDIP_A_FAMILY", AF_INET6],
                                            ["WGALLOWEDIP_A_IPADDR", ip_network("2001:db8:10:2::/64")
                                             .network_address.packed],
                                            ["WGALLOWEDIP_A_CIDR_MASK", 64]]}]]]}]]]
    replies = []
    for m in (first, second):
        m["cmd"] = WG_CMD_GET_DEVICE
        m.encode()
        replies.append(decoded(m, wgmsg))
    state = kernel.parse_device_replies(replies)
    assert state.config == DeviceConfig(ME.private, 51820, "flannel-wg")
    (ps,) = state.peers
    assert ps.peer == WgPeer(a, "192.0.2.2:51820", allowed_ips(["10.5.2.0/24", "2001:db8:10:2::/64"]),
                             device="flannel-wg")
    assert (ps.rx_bytes, ps.tx_bytes, ps.last_handshake) == (10, 20, None)


def test_detection_here_says_why():
    result = kernel.kernel_wireguard_available()
    if os.path.exists("/sys/module/wireguard"):
        pytest.skip("this kernel has the wireguard module")
    assert not result.available
    assert "cannot create a wireguard device" in result.reason and "wireguard-go is used instead" in result.reason
    assert "\n" not in result.reason
