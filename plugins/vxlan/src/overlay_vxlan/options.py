"""The ``Backend`` options of a vxlan network, with Flannel's names and defaults."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from overlay_core import ConfigError, NetworkConfig
from overlay_core.options import option, option_names, read_options

LOGGER = logging.getLogger("overlay.vxlan")

DEFAULT_PORT = 8472  # the Linux kernel's VXLAN port (Flannel's default)
OVERHEAD_V4 = 50  # outer IPv4 20 + UDP 8 + VXLAN 8 + inner Ethernet 14
OVERHEAD_V6 = 70  # outer IPv6 40 instead of 20


@dataclass(frozen=True)
class VxlanOptions:
    vni: int = option("VNI", 1, between=(1, 16777215))
    port: int = option("Port", DEFAULT_PORT, between=(0, 65535), parse=lambda v: v or DEFAULT_PORT)  # 0: default
    gbp: bool = option("GBP", False)
    learning: bool = option("Learning", False)
    direct_routing: bool = option("DirectRouting", False)
    # the underlay's MTU; each device must still get its family's minimum (IPv6: checked below)
    mtu: int | None = option("MTU", None, kind=int, between=(68 + OVERHEAD_V4, 65535))

    @property
    def device(self) -> str:
        return f"flannel.{self.vni}"

    @property
    def device_v6(self) -> str:
        return f"flannel-v6.{self.vni}"


OPTION_NAMES = (*option_names(VxlanOptions), "MacPrefix", "Name")  # the last two: Windows only


def parse_options(config: NetworkConfig) -> VxlanOptions:
    """Validate the vxlan options; one-line ``ConfigError`` for a wrong type or value."""
    if config.backend_option("macprefix") is not None:
        LOGGER.warning("vxlan: MacPrefix only applies to Windows nodes; ignored")
    options = read_options(VxlanOptions, config, backend="vxlan")
    low = 1280 + OVERHEAD_V6
    if config.ipv6 is not None and options.mtu is not None and options.mtu < low:
        raise ConfigError(f"vxlan: MTU must be a whole number from {low} to 65535 with IPv6, got {options.mtu}")
    return options


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
