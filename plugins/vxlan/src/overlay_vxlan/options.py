"""The ``Backend`` options of a vxlan network, with Flannel's names and defaults."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from overlay_core import ConfigError, NetworkConfig

LOGGER = logging.getLogger("overlay.vxlan")

DEFAULT_PORT = 8472  # the Linux kernel's VXLAN port (Flannel's default)
OVERHEAD_V4 = 50  # outer IPv4 20 + UDP 8 + VXLAN 8 + inner Ethernet 14
OVERHEAD_V6 = 70  # outer IPv6 40 instead of 20


@dataclass(frozen=True)
class VxlanOptions:
    vni: int = 1
    port: int = DEFAULT_PORT
    gbp: bool = False
    learning: bool = False
    direct_routing: bool = False
    mtu: int | None = None

    @property
    def device(self) -> str:
        return f"flannel.{self.vni}"

    @property
    def device_v6(self) -> str:
        return f"flannel-v6.{self.vni}"


def _int(config: NetworkConfig, name: str, default: int, low: int, high: int) -> int:
    value = config.backend_option(name.lower(), default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"vxlan: {name} must be a whole number from {low} to {high}, got {value!r}")
    return value


def _bool(config: NetworkConfig, name: str) -> bool:
    value = config.backend_option(name.lower(), False)
    if not isinstance(value, bool):
        raise ConfigError(f"vxlan: {name} must be true or false, got {value!r}")
    return value


OPTION_NAMES = ("VNI", "Port", "GBP", "Learning", "DirectRouting", "MTU", "MacPrefix", "Name")  # last two: Windows


def parse_options(config: NetworkConfig) -> VxlanOptions:
    """Validate the vxlan options; one-line ``ConfigError`` for a wrong type or value."""
    if config.backend_option("macprefix") is not None:
        LOGGER.warning("vxlan: MacPrefix only applies to Windows nodes; ignored")
    port = _int(config, "Port", 0, 0, 65535) or DEFAULT_PORT
    mtu = config.backend_option("mtu")
    if mtu is not None:  # the underlay's MTU: each device must still get the minimum of its family
        low = 1280 + OVERHEAD_V6 if config.ipv6 is not None else 68 + OVERHEAD_V4
        mtu = _int(config, "MTU", 0, low, 65535)
    return VxlanOptions(
        vni=_int(config, "VNI", 1, 1, 16777215),
        port=port,
        gbp=_bool(config, "GBP"),
        learning=_bool(config, "Learning"),
        direct_routing=_bool(config, "DirectRouting"),
        mtu=mtu,
    )


def device_mtus(options: VxlanOptions, external_mtu: int, iface_name: str,
                ipv4: bool, ipv6: bool) -> tuple[int | None, int | None]:
    """MTU of the IPv4 and IPv6 devices. As in Flannel, ``MTU`` is the underlay's (default: the
    external interface's) and each device gets it minus the encapsulation overhead: 50 bytes
    over IPv4 (``"MTU":1400`` → 1350, Flannel's figure), 70 over IPv6 (Flannel subtracts 50 there
    too, which an IPv6 underlay cannot carry). An ``MTU`` above the interface's is refused."""
    underlay = external_mtu if options.mtu is None else options.mtu
    if underlay > external_mtu:
        raise ConfigError(
            f"vxlan: MTU {options.mtu} is more than {iface_name}'s MTU {external_mtu}; MTU is the "
            f"underlay's (as in Flannel): set it to {external_mtu} or less, or leave it out"
        )
    v4 = underlay - OVERHEAD_V4 if ipv4 else None
    v6 = underlay - OVERHEAD_V6 if ipv6 else None
    return v4, v6
