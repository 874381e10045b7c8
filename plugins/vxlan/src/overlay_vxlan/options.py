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


def parse_options(config: NetworkConfig) -> VxlanOptions:
    """Validate the vxlan options; one-line ``ConfigError`` for a wrong type or value."""
    if config.backend_option("macprefix") is not None:
        LOGGER.warning("vxlan: MacPrefix only applies to Windows nodes; ignored")
    port = _int(config, "Port", 0, 0, 65535) or DEFAULT_PORT
    mtu = config.backend_option("mtu")
    if mtu is not None:
        low = 1280 if config.ipv6 is not None else 68
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
    """MTU of the IPv4 and IPv6 devices: the ``MTU`` option, else the external MTU minus the
    encapsulation overhead. An ``MTU`` the underlay cannot carry is a config error."""
    out = []
    for enabled, overhead in ((ipv4, OVERHEAD_V4), (ipv6, OVERHEAD_V6)):
        if not enabled:
            out.append(None)
            continue
        limit = external_mtu - overhead
        if options.mtu is not None and options.mtu > limit:
            raise ConfigError(
                f"vxlan: MTU {options.mtu} does not fit {iface_name}'s MTU {external_mtu} minus "
                f"{overhead} bytes of encapsulation; set MTU to {limit} or less (here MTU is the "
                "pod MTU; Flannel's MTU meant the underlay's)"
            )
        out.append(options.mtu or limit)
    return out[0], out[1]
