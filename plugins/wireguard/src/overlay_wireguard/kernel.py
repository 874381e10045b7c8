"""The kernel-module path: what we would send over netlink where the ``wireguard`` module exists.

The device is an rtnetlink link of kind ``wireguard`` (``RTM_NEWLINK``); its key, port and peers
go over generic netlink family ``wireguard`` (``WG_CMD_SET_DEVICE``), with the same values the
UAPI path uses (``DeviceConfig``, ``WgPeer``), so policy and reconcile are shared. Messages are
built with pyroute2's message classes; core's netlink thread sends them
(``services.links.generic("wireguard", wgmsg)``), and :class:`KernelDevice` gives the reconcile
target the same ``get``/``set`` as the UAPI client. Tests capture what would be sent through a fake
sender; this machine has no module, so nothing is sent to a kernel. ``kernel_wireguard_available``
says which path a node takes and why.
"""

from __future__ import annotations

import base64
import os
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from ipaddress import IPv6Address, ip_address
from socket import AF_INET, AF_INET6

from overlay_core import ConfigError, KernelFeatureMissingError
from overlay_core.dataplane import GenericNetlinkError
from overlay_core.services import Secret
from pyroute2.netlink import NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST
from pyroute2.netlink.generic.wireguard import (
    WG_CMD_GET_DEVICE,
    WG_CMD_SET_DEVICE,
    WG_GENL_VERSION,
    WGDEVICE_F_REPLACE_PEERS,
    WGPEER_F_REMOVE_ME,
    WGPEER_F_REPLACE_ALLOWEDIPS,
    wgmsg,
)
from pyroute2.netlink.rtnl import RTM_NEWLINK
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

from .keys import encode_key
from .peer import DeviceConfig, DeviceState, PeerState, WgPeer, allowed_ips
from .uapi import UapiError

GENL_FAMILY = "wireguard"
LINK_KIND = "wireguard"
PEERS_PER_MESSAGE = 32  # keeps each message a few KiB, as wg(8) splits its own
_ZERO = bytes(32)


@dataclass(frozen=True)
class Availability:
    available: bool
    reason: str


def kernel_wireguard_available(timeout: float = 10.0) -> Availability:
    """Can this kernel make a WireGuard device? Probed by creating one in a throwaway anonymous
    network namespace (``unshare --net``), never in the root namespace."""
    try:
        probe = subprocess.run(["unshare", "--net", "ip", "link", "add", "wgprobe0", "type", "wireguard"],
                               capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Availability(False, f"could not probe for the wireguard kernel module ({exc})")
    if probe.returncode == 0:
        return Availability(True, "the kernel creates wireguard devices")
    detail = (probe.stderr or probe.stdout).strip().splitlines()
    why = detail[-1] if detail else "no detail"
    return Availability(False, f"the kernel cannot create a wireguard device ({why}); wireguard-go is used instead")


DATA_PATH_ENV = "OVERLAY_WIREGUARD_DATAPATH"
KERNEL = "kernel"
USERSPACE = "wireguard-go"


def choose_data_path(env: dict[str, str] | None = None) -> tuple[str, str]:
    """``(path, why)``: the kernel module where it exists, else wireguard-go. The environment
    variable ``OVERLAY_WIREGUARD_DATAPATH`` (``auto``, ``kernel`` or ``wireguard-go``) forces one;
    ``kernel`` without the module is a one-line error."""
    env = os.environ if env is None else env
    wanted = env.get(DATA_PATH_ENV, "auto").strip().lower() or "auto"
    if wanted not in ("auto", KERNEL, USERSPACE):
        raise ConfigError(f"wireguard: {DATA_PATH_ENV}={wanted!r}: use auto, kernel or wireguard-go")
    if wanted == USERSPACE:
        return USERSPACE, f"{DATA_PATH_ENV}=wireguard-go"
    found = kernel_wireguard_available()
    if found.available:
        return KERNEL, found.reason
    if wanted == KERNEL:
        raise KernelFeatureMissingError(f"wireguard: {DATA_PATH_ENV}=kernel but {found.reason.split(';')[0]}: "
                                        "load the module with 'modprobe wireguard' or unset the variable")
    return USERSPACE, found.reason


def link_create_message(name: str, mtu: int) -> ifinfmsg:
    """``ip link add <name> mtu <mtu> type wireguard`` as an rtnetlink request."""
    msg = ifinfmsg()
    msg["attrs"] = [["IFLA_IFNAME", name], ["IFLA_MTU", mtu],
                    ["IFLA_LINKINFO", {"attrs": [["IFLA_INFO_KIND", "wireguard"]]}]]
    msg["header"]["type"] = RTM_NEWLINK
    msg["header"]["flags"] = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL
    msg.encode()
    return msg


def _secret_b64(secret: Secret | None) -> str:
    value = secret.reveal() if secret is not None else _ZERO
    return encode_key(value if isinstance(value, bytes) else bytes.fromhex(value))


def _endpoint(text: str) -> dict:
    host, _, port = text.rpartition(":")
    return {"addr": str(ip_address(host.strip("[]"))), "port": int(port)}


def _peer_attrs(peer: WgPeer) -> list:
    attrs: list = [["WGPEER_A_PUBLIC_KEY", peer.public_key], ["WGPEER_A_FLAGS", WGPEER_F_REPLACE_ALLOWEDIPS],
                   ["WGPEER_A_PRESHARED_KEY", _secret_b64(peer.psk)],
                   ["WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL", peer.keepalive]]
    if peer.endpoint is not None:
        attrs.append(["WGPEER_A_ENDPOINT", _endpoint(peer.endpoint)])
    attrs.append(["WGPEER_A_ALLOWEDIPS", [
        {"attrs": [["WGALLOWEDIP_A_FAMILY", AF_INET if net.version == 4 else AF_INET6],
                   ["WGALLOWEDIP_A_IPADDR", net.network_address.packed],
                   ["WGALLOWEDIP_A_CIDR_MASK", net.prefixlen]]}
        for net in peer.allowed_ips]])
    return attrs


def set_device_messages(ifname: str, family_id: int, config: DeviceConfig | None = None,
                        peers: Sequence[WgPeer] = (), remove: Iterable[str] = (),
                        replace_peers: bool = False) -> list[wgmsg]:
    """``WG_CMD_SET_DEVICE`` requests for one change set (removals first, as on the UAPI path),
    ``PEERS_PER_MESSAGE`` peers each; settings and ``REPLACE_PEERS`` ride on the first only."""
    sections = [[["WGPEER_A_PUBLIC_KEY", key], ["WGPEER_A_FLAGS", WGPEER_F_REMOVE_ME]] for key in remove]
    sections += [_peer_attrs(p) for p in peers]
    chunks = [sections[i:i + PEERS_PER_MESSAGE] for i in range(0, len(sections), PEERS_PER_MESSAGE)] or [[]]
    out = []
    for n, chunk in enumerate(chunks):
        msg = wgmsg()
        msg["cmd"] = WG_CMD_SET_DEVICE
        msg["version"] = WG_GENL_VERSION
        attrs: list = [["WGDEVICE_A_IFNAME", ifname]]
        if n == 0 and config is not None:
            attrs += [["WGDEVICE_A_PRIVATE_KEY", _secret_b64(config.private_key)],
                      ["WGDEVICE_A_LISTEN_PORT", config.listen_port]]
        if n == 0 and replace_peers:
            attrs.append(["WGDEVICE_A_FLAGS", WGDEVICE_F_REPLACE_PEERS])
        if chunk:
            attrs.append(["WGDEVICE_A_PEERS", [{"attrs": a} for a in chunk]])
        msg["attrs"] = attrs
        msg["header"]["type"] = family_id
        msg["header"]["flags"] = NLM_F_REQUEST | NLM_F_ACK
        msg.encode()
        out.append(msg)
    return out


def get_device_message(ifname: str, family_id: int) -> wgmsg:
    """``WG_CMD_GET_DEVICE`` dump request (``wg show``)."""
    msg = wgmsg()
    msg["cmd"] = WG_CMD_GET_DEVICE
    msg["version"] = WG_GENL_VERSION
    msg["attrs"] = [["WGDEVICE_A_IFNAME", ifname]]
    msg["header"]["type"] = family_id
    msg["header"]["flags"] = NLM_F_REQUEST | NLM_F_DUMP
    msg.encode()
    return msg


def _peer_state(nla, device: str) -> PeerState:
    endpoint = nla.get_attr("WGPEER_A_ENDPOINT")
    ep = None
    if endpoint:
        host, port = endpoint["addr"], endpoint["port"]
        ep = f"[{host}]:{port}" if isinstance(ip_address(host), IPv6Address) else f"{host}:{port}"
    psk = nla.get_attr("WGPEER_A_PRESHARED_KEY")
    psk_raw = base64.b64decode(psk) if psk else _ZERO
    nets = [a["addr"] for a in nla.get_attr("WGPEER_A_ALLOWEDIPS") or [] if "addr" in a]
    hs = nla.get_attr("WGPEER_A_LAST_HANDSHAKE_TIME")
    when = hs["tv_sec"] + hs["tv_nsec"] / 1e9 if hs and (hs["tv_sec"] or hs["tv_nsec"]) else None
    peer = WgPeer(nla.get_attr("WGPEER_A_PUBLIC_KEY").decode(), ep, allowed_ips(nets),
                  Secret(psk_raw) if psk_raw != _ZERO else None,
                  nla.get_attr("WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL") or 0, device)
    return PeerState(peer, when, nla.get_attr("WGPEER_A_RX_BYTES") or 0, nla.get_attr("WGPEER_A_TX_BYTES") or 0)


def parse_device_replies(replies: Iterable[wgmsg]) -> DeviceState:
    """The answer to ``get_device_message`` as the same ``DeviceState`` the UAPI path gives. The
    kernel splits a big device over several messages, a peer's allowed IPs included."""
    config = DeviceConfig(None, 0)
    peers: list[PeerState] = []
    for n, msg in enumerate(replies):
        device = msg.get_attr("WGDEVICE_A_IFNAME") or ""
        if n == 0:
            private = msg.get_attr("WGDEVICE_A_PRIVATE_KEY")
            raw = base64.b64decode(private) if private else _ZERO
            config = DeviceConfig(Secret(raw) if raw != _ZERO else None, msg.get_attr("WGDEVICE_A_LISTEN_PORT") or 0,
                                  device)
        for nla in msg.get_attr("WGDEVICE_A_PEERS") or []:
            state = _peer_state(nla, device)
            if peers and peers[-1].peer.key == state.peer.key:  # a peer continued in the next message
                last = peers[-1]
                merged = replace(last.peer, allowed_ips=allowed_ips(last.peer.allowed_ips + state.peer.allowed_ips))
                state = replace(last, peer=merged)
                peers.pop()
            peers.append(state)
    return DeviceState(config, tuple(peers))


def kernel_device(links, device: str) -> KernelDevice:
    """The generic netlink client of kernel device ``device``, through core's ``links``."""
    return KernelDevice(links.generic(GENL_FAMILY, wgmsg), device)


class KernelDevice:
    """Kernel WireGuard device ``device`` configured over generic netlink through ``family``
    (core's sender on the netlink thread): the ``get``/``set`` of ``UapiClient``, so
    ``WireguardDeviceTarget`` reconciles either path alike. A refusal is a ``UapiError`` with the
    errno (the target then retries change by change); no message content reaches an error."""

    def __init__(self, family, device: str) -> None:
        self.family = family
        self.device = device

    def __repr__(self) -> str:
        return f"KernelDevice({self.device!r})"

    async def get(self) -> DeviceState:
        try:
            replies = await self.family.request(lambda family_id: [get_device_message(self.device, family_id)])
        except GenericNetlinkError as exc:
            raise UapiError(f"kernel wireguard device {self.device}: get failed: {exc}", exc.errno) from None
        return parse_device_replies(replies)

    async def set(self, config: DeviceConfig | None = None, peers: Sequence[WgPeer] = (),
                  remove: Iterable[str] = (), replace_peers: bool = False) -> None:
        remove = list(remove)
        try:
            await self.family.request(
                lambda family_id: set_device_messages(self.device, family_id, config, peers, remove, replace_peers))
        except GenericNetlinkError as exc:
            raise UapiError(f"kernel wireguard device {self.device}: set refused: {exc}", exc.errno) from None
