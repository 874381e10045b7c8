"""The values a WireGuard device is made of, as the reconcile sees them.

``WgPeer`` and ``DeviceConfig`` are hashable values with a ``.key`` (RUNTIME-API "Reconcile
targets"): desired ones come from ``calc``, actual ones from a UAPI ``get`` (or a netlink dump
on the kernel path), and two with the same key but other values mean "set it again".
Counters and handshake times are not part of a peer's value; they live in ``PeerState``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network, ip_network

from overlay_core.services import Secret

Network = IPv4Network | IPv6Network
DEVICE_KEY = "@device"  # the key of a device's own settings among its peers (never a base64 key)


def allowed_ips(nets: Iterable[Network | str]) -> tuple[Network, ...]:
    """Canonical, sorted allowed-IP tuple (IPv4 first), so equal sets compare equal."""
    parsed = {n if isinstance(n, IPv4Network | IPv6Network) else ip_network(n) for n in nets}
    return tuple(sorted(parsed, key=lambda n: (n.version, n)))


@dataclass(frozen=True)
class WgPeer:
    """One peer of one device: base64 public key, ``ip:port`` / ``[ip6]:port`` endpoint, and
    the device it belongs on (so core can route it to that device's target)."""

    public_key: str
    endpoint: str | None
    allowed_ips: tuple[Network, ...]
    psk: Secret | None = None
    keepalive: int = 0
    device: str = ""

    @property
    def key(self) -> str:
        return self.public_key

    def describe(self) -> str:
        """For logs: what the peer routes and where, never a key."""
        return f"{', '.join(map(str, self.allowed_ips)) or 'no allowed IPs'} via {self.endpoint or 'no endpoint'}"


@dataclass(frozen=True)
class DeviceConfig:
    """A device's own settings: private key and listen port (reconciled like a peer)."""

    private_key: Secret | None
    listen_port: int
    device: str = ""

    @property
    def key(self) -> str:
        return DEVICE_KEY


@dataclass(frozen=True)
class PeerState:
    """What ``get`` says about a peer beyond its value: handshake time (Unix seconds, None if
    never) and byte counters."""

    peer: WgPeer
    last_handshake: float | None = None
    rx_bytes: int = 0
    tx_bytes: int = 0


@dataclass(frozen=True)
class DeviceState:
    config: DeviceConfig
    peers: tuple[PeerState, ...] = ()
