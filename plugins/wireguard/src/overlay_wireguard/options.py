"""The ``Backend`` options of a wireguard network: Flannel's names, defaults and meanings, read
with core's ``read_options`` (one-line errors; the PSK never shown)."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from overlay_core import ConfigError, NetworkConfig
from overlay_core.options import option, option_names, read_options
from overlay_core.services import Secret

BACKEND = "wireguard"
MODES = ("separate", "auto", "ipv4", "ipv6")
OVERHEAD = 80  # outer IPv6 40 + UDP 8 + WireGuard header 16 + auth tag 16 (Flannel's figure)
KEY_LEN = 32


def parse_psk(value: str) -> Secret | None:
    """A PSK is the base64 text of exactly 32 bytes (``wg genpsk``); "" means none, as in Flannel."""
    if value == "":
        return None
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != KEY_LEN:
        raise ValueError("must be the base64 text of a 32-byte key, as `wg genpsk` prints (value not shown)")
    return Secret(raw)


@dataclass(frozen=True)
class WgOptions:
    listen_port: int = option("ListenPort", 51820, between=(1, 65535))
    listen_port_v6: int = option("ListenPortV6", 51821, between=(1, 65535))
    # the underlay MTU (Flannel's meaning); None = the external interface's
    mtu: int | None = option("MTU", None, kind=int, between=(OVERHEAD + 68, 65535))
    psk: Secret | None = option("PSK", None, kind=str, secret=True, parse=parse_psk)
    keepalive: int = option("PersistentKeepaliveInterval", 0, between=(0, 65535))  # seconds, 0 = off
    mode: str = option("Mode", "separate", choices=MODES)

    @property
    def single_device(self) -> bool:
        """True in the modes where one device ``flannel-wg`` carries both families."""
        return self.mode != "separate"


#: The ``Backend`` keys, as Flannel spells them.
OPTION_NAMES = option_names(WgOptions)


def parse_options(config: NetworkConfig) -> WgOptions:
    """Validate the wireguard options of ``config``; one-line ``ConfigError`` when one is wrong."""
    return read_options(WgOptions, config, backend=BACKEND)


def device_mtu(options: WgOptions, external_mtu: int, ipv6: bool) -> int:
    """The tunnel device's MTU, also written as ``FLANNEL_MTU``: the underlay MTU (``MTU`` or the
    external interface's) minus 80, as in Flannel. IPv6 needs at least 1280 on the device."""
    underlay = options.mtu or external_mtu
    mtu = underlay - OVERHEAD
    if ipv6 and mtu < 1280:
        raise ConfigError(f"{BACKEND}: an underlay MTU of {underlay} leaves {mtu} for the tunnel, IPv6 needs 1280; "
                          f"set MTU to {1280 + OVERHEAD} or more")
    if mtu < 68:
        raise ConfigError(f"{BACKEND}: an underlay MTU of {underlay} leaves {mtu} for the tunnel; "
                          f"set MTU to {68 + OVERHEAD} or more")
    return mtu
