"""Pure policy: which devices, what the lease says, which peers, addresses and routes.

Everything here is a function of the options, this node's addresses and the leases, so it is
tested without a kernel. Flannel's rules (flannel-behaviour.md §4.4) with two deliberate fixes:

* Port quirk. In the single-device modes (``auto``, ``ipv4``, ``ipv6``) Flannel's one device
  listens on ``ListenPort`` but it advertises ``ListenPortV6`` in ``BackendV6Data`` and dials
  a peer's IPv6 endpoint on that port. We advertise the single device's real port in both data
  and, for a peer's single device, take the port from ``BackendData`` when it has one; an IPv6-
  only lease whose port is the network's ``ListenPortV6`` is Flannel's quirk value, read as
  ``ListenPort``. A port 0 (Flannel before ports were advertised) means our own device's port.
* Auto mode never dials ``0.0.0.0``: a peer without an IPv4 public address is dialled on IPv6.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Interface, IPv4Network, IPv6Address, IPv6Interface, IPv6Network, ip_network
from typing import Any

from overlay_core import Lease

from .keys import decode_key, encode_key
from .options import WgOptions
from .peer import WgPeer, allowed_ips

BACKEND_TYPE = "wireguard"
DEVICE = "flannel-wg"
DEVICE_V6 = "flannel-wg-v6"
UNSET_V4 = IPv4Address("0.0.0.0")
_RFC1918 = (ip_network("10.0.0.0/8"), ip_network("172.16.0.0/12"), ip_network("192.168.0.0/16"))
_ULA = ip_network("fc00::/7")


def rfc1918(ip: IPv4Address) -> bool:
    """Flannel's ``IP4.IsPrivate``: only the three RFC 1918 ranges (Python's ``is_private`` is wider)."""
    return any(ip in net for net in _RFC1918)


def ula(ip: IPv6Address) -> bool:
    return ip in _ULA


@dataclass(frozen=True)
class Local:
    """This node as the policy needs it: options, enabled families, advertised addresses."""

    options: WgOptions
    ipv4: bool
    ipv6: bool
    public_ip: IPv4Address | None = None
    public_ipv6: IPv6Address | None = None
    public_key: str = ""


@dataclass(frozen=True)
class DeviceSpec:
    name: str
    port: int
    families: tuple[int, ...]


def devices(local: Local) -> tuple[DeviceSpec, ...]:
    """``separate``: flannel-wg (IPv4, ListenPort) and/or flannel-wg-v6 (IPv6, ListenPortV6);
    otherwise one flannel-wg on ListenPort for every enabled family."""
    opts = local.options
    if opts.single_device:
        fams = tuple(f for f, on in ((4, local.ipv4), (6, local.ipv6)) if on)
        return (DeviceSpec(DEVICE, opts.listen_port, fams),) if fams else ()
    out = []
    if local.ipv4:
        out.append(DeviceSpec(DEVICE, opts.listen_port, (4,)))
    if local.ipv6:
        out.append(DeviceSpec(DEVICE_V6, opts.listen_port_v6, (6,)))
    return tuple(out)


def device_for(local: Local, family: int) -> DeviceSpec | None:
    return next((d for d in devices(local) if family in d.families), None)


def lease_data(local: Local, public_key: str) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """``BackendData`` and ``BackendV6Data``: ``{"PublicKey":…,"Port":…}`` in Go's field order,
    so the encoded lease is byte-identical to Flannel's (single-device modes: see the port quirk)."""
    v4 = device_for(local, 4)
    v6 = device_for(local, 6)
    return (
        {"PublicKey": public_key, "Port": v4.port} if v4 else None,
        {"PublicKey": public_key, "Port": v6.port} if v6 else None,
    )


@dataclass(frozen=True)
class PeerData:
    public_key: str
    port: int


def parse_peer_data(data: Any) -> PeerData:
    """Decode a lease's ``BackendData``/``BackendV6Data`` as Flannel's Go decoder would (field
    names case-insensitive, Port 0..65535, missing Port = 0); ``ValueError`` with the reason."""
    if not isinstance(data, Mapping):
        raise ValueError("is not a JSON object")
    fields = {str(k).lower(): v for k, v in data.items()}
    key = fields.get("publickey")
    if not isinstance(key, str):
        raise ValueError("has no PublicKey")
    try:
        raw = decode_key(key)
    except ValueError as exc:
        raise ValueError(f"has a PublicKey that is {exc}") from None
    port = fields.get("port", 0)
    if port is None:
        port = 0
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"has Port {port!r}, not a number from 0 to 65535")
    return PeerData(encode_key(raw), port)


@dataclass(frozen=True)
class PeerPlan:
    """The peers one lease gives (each names its device), or why it gives none (``skipped``)."""

    peers: tuple[WgPeer, ...] = ()
    skipped: str | None = None


def _endpoint(ip: IPv4Address | IPv6Address, port: int) -> str:
    return f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}"


def choose_family(local: Local, peer_v4: IPv4Address | None, peer_v6: IPv6Address | None) -> int:
    """Auto mode (Flannel's ``selectMode``): IPv4 unless the peer only has IPv6, or its IPv4 is
    RFC 1918 (or we have none) while its IPv6 and ours are global (not ULA)."""
    if peer_v6 is None:
        return 4
    if peer_v4 is None:
        return 6
    if not rfc1918(peer_v4) and local.public_ip is not None:
        return 4
    if not ula(peer_v6) and local.public_ipv6 is not None and not ula(local.public_ipv6):
        return 6
    return 4


def _data(lease: Lease, family: int) -> tuple[PeerData | None, str | None]:
    raw = lease.attrs.backend_data if family == 4 else lease.attrs.backend_v6_data
    name = "BackendData" if family == 4 else "BackendV6Data"
    if raw is None:
        return None, None
    try:
        return parse_peer_data(raw), None
    except ValueError as exc:
        return None, f"its {name} {exc}"


def plan_peer(local: Local, lease: Lease) -> PeerPlan:
    """The desired peer(s) for one peer lease: never raises, a malformed lease is skipped."""
    opts = local.options
    if lease.attrs.backend_type != BACKEND_TYPE:
        return PeerPlan(skipped=f"its backend is {lease.attrs.backend_type or 'unset'!r}, not wireguard")
    v4_ip = lease.attrs.public_ip if lease.attrs.public_ip != UNSET_V4 else None
    v6_ip = lease.attrs.public_ipv6
    subnets = {4: lease.subnet if local.ipv4 else None, 6: lease.ipv6_subnet if local.ipv6 else None}
    data = {}
    for family in (4, 6):
        if subnets[family] is None:
            continue
        data[family], reason = _data(lease, family)
        if reason:
            return PeerPlan(skipped=reason)
    families = [f for f in (4, 6) if subnets[f] is not None and data.get(f) is not None]
    if not families:
        return PeerPlan(skipped="it has no subnet with wireguard data for a family this network uses")
    keys = {data[f].public_key for f in families}
    if len(keys) > 1:
        return PeerPlan(skipped="its BackendData and BackendV6Data carry different public keys")
    key = keys.pop()
    if key == local.public_key:
        return PeerPlan(skipped="it carries this node's own public key")
    if not opts.single_device:
        out = []
        for family in families:
            dev = device_for(local, family)
            ip = v4_ip if family == 4 else v6_ip
            if ip is None:
                return PeerPlan(skipped=f"it has no IPv{family} public address for {dev.name}")
            port = data[family].port or dev.port
            out.append(WgPeer(key, _endpoint(ip, port), allowed_ips([subnets[family]]), opts.psk, opts.keepalive,
                              dev.name))
        return PeerPlan(tuple(out))
    family = {"ipv4": 4, "ipv6": 6}.get(opts.mode) or choose_family(local, v4_ip, v6_ip)
    ip = v4_ip if family == 4 else v6_ip
    if ip is None:
        return PeerPlan(skipped=f"Mode {opts.mode} dials IPv{family} and it has no IPv{family} public address")
    port = single_device_port(local, data.get(4), data.get(6))
    nets = allowed_ips(subnets[f] for f in families)
    return PeerPlan((WgPeer(key, _endpoint(ip, port), nets, opts.psk, opts.keepalive, DEVICE),))


def single_device_port(local: Local, v4: PeerData | None, v6: PeerData | None) -> int:
    """The port a peer's single device listens on (the quirk fix, see the module docstring)."""
    opts = local.options
    if v4 is not None and v4.port:
        return v4.port
    if v6 is not None and v6.port:
        return opts.listen_port if v6.port == opts.listen_port_v6 else v6.port
    return opts.listen_port


@dataclass(frozen=True)
class Desired:
    """Desired peers per device (by public key) and the leases skipped, with reasons."""

    peers: dict[str, dict[str, WgPeer]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # lease key -> reason


def desired_peers(local: Local, leases: Iterable[Lease], own_key: str | None = None) -> Desired:
    """The whole desired peer set from the current peer leases. Two leases with one public key
    (a node that re-registered before its old lease expired): the newest revision wins."""
    out = Desired({d.name: {} for d in devices(local)})
    winner: dict[tuple[str, str], Lease] = {}
    for lease in sorted(leases, key=lambda le: (le.revision, le.key)):
        if lease.key == own_key:
            continue
        plan = plan_peer(local, lease)
        if plan.skipped:
            out.skipped[lease.key] = plan.skipped
            continue
        for peer in plan.peers:
            older = winner.get((peer.device, peer.key))
            if older is not None:
                out.skipped[older.key] = f"lease {lease.key} has the same public key and is newer"
            winner[(peer.device, peer.key)] = lease
            out.peers[peer.device][peer.key] = peer
    return out


@dataclass(frozen=True)
class DeviceLayout:
    """What the tunnel device carries besides peers: addresses, routes (scope link), MTU."""

    name: str
    port: int
    addresses: tuple[IPv4Interface | IPv6Interface, ...]
    routes: tuple[IPv4Network | IPv6Network, ...]
    mtu: int


def device_layouts(local: Local, own: Lease, network: IPv4Network | None, ipv6_network: IPv6Network | None,
                   mtu: int) -> tuple[DeviceLayout, ...]:
    """As Flannel: the own subnet's base address /32 (/128) and ``<Network> dev <device> scope link``."""
    out = []
    for dev in devices(local):
        addrs: list[IPv4Interface | IPv6Interface] = []
        routes: list[IPv4Network | IPv6Network] = []
        if 4 in dev.families and own.subnet is not None and network is not None:
            addrs.append(IPv4Interface(f"{own.subnet.network_address}/32"))
            routes.append(network)
        if 6 in dev.families and own.ipv6_subnet is not None and ipv6_network is not None:
            addrs.append(IPv6Interface(f"{own.ipv6_subnet.network_address}/128"))
            routes.append(ipv6_network)
        out.append(DeviceLayout(dev.name, dev.port, tuple(addrs), tuple(routes), mtu))
    return tuple(out)
