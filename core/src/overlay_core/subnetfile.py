"""The subnet file (``/run/flannel/subnet.env``) the CNI plugin reads.

Written atomically (temp file in the same directory, fsync, rename) with mode 0644, so a
reader never sees half a file. Read back at startup for the previous subnets.
"""

from __future__ import annotations

import ipaddress
import logging
from ipaddress import IPv4Network, IPv6Network

from .config import NetworkConfig
from .lease import Lease
from .services.files import atomic_write

LOGGER = logging.getLogger("overlay.subnetfile")


def render(config: NetworkConfig, lease: Lease, mtu: int, ip_masq: bool) -> str:
    lines = []
    if config.ipv4 and lease.subnet is not None:
        lines.append(f"FLANNEL_NETWORK={config.ipv4.network}")
        lines.append(f"FLANNEL_SUBNET={lease.subnet.network_address + 1}/{lease.subnet.prefixlen}")
    if config.ipv6 and lease.ipv6_subnet is not None:
        lines.append(f"FLANNEL_IPV6_NETWORK={config.ipv6.network}")
        lines.append(
            f"FLANNEL_IPV6_SUBNET={lease.ipv6_subnet.network_address + 1}/{lease.ipv6_subnet.prefixlen}"
        )
    lines.append(f"FLANNEL_MTU={mtu}")
    lines.append(f"FLANNEL_IPMASQ={'true' if ip_masq else 'false'}")
    return "\n".join(lines) + "\n"


def write(path: str, content: str) -> None:
    atomic_write(path, content, 0o644)


def read(path: str) -> dict[str, str]:
    """Parse a dotenv-style file; a missing or unreadable file is empty."""
    try:
        with open(path) as fh:
            text = fh.read()
    except OSError:
        return {}
    values = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        values[key.strip()] = value.strip().strip('"')
    return values


def _one_network(value: str | None, version: int):
    """A single valid CIDR of the family, masked to its network; else None."""
    if not value:
        return None
    nets = []
    for item in value.split(","):
        try:
            net = ipaddress.ip_network(item.strip(), strict=False)
        except ValueError:
            continue
        if net.version == version:
            nets.append(net)
    if len(nets) != 1:
        if nets:
            LOGGER.info("ignoring %r: expected one subnet", value)
        return None
    return nets[0]


def previous_subnets(path: str) -> tuple[IPv4Network | None, IPv6Network | None]:
    values = read(path)
    return (
        _one_network(values.get("FLANNEL_SUBNET"), 4),
        _one_network(values.get("FLANNEL_IPV6_SUBNET"), 6),
    )


def previous_networks(path: str) -> tuple[IPv4Network | None, IPv6Network | None]:
    values = read(path)
    return (
        _one_network(values.get("FLANNEL_NETWORK"), 4),
        _one_network(values.get("FLANNEL_IPV6_NETWORK"), 6),
    )
