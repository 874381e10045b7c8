"""The ``Backend`` options of a wireguard network: Flannel's names, defaults and meanings.

The checks are a table (one ``Opt`` per key) so they move to core's ``read_options`` unchanged
later: each entry names the Flannel key, its default, its kind and a range, a choice list or a
check function raising ``ValueError(reason)``.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from overlay_core import ConfigError, NetworkConfig
from overlay_core.errors import did_you_mean
from overlay_core.services import Secret

BACKEND = "wireguard"
MODES = ("separate", "auto", "ipv4", "ipv6")
OVERHEAD = 80  # outer IPv6 40 + UDP 8 + WireGuard header 16 + auth tag 16 (Flannel's figure)
KEY_LEN = 32


@dataclass(frozen=True)
class WgOptions:
    listen_port: int = 51820
    listen_port_v6: int = 51821
    mtu: int | None = None  # the underlay MTU (Flannel's meaning); None = the external interface's
    psk: Secret | None = None
    keepalive: int = 0  # PersistentKeepaliveInterval, seconds, 0 = off
    mode: str = "separate"

    @property
    def single_device(self) -> bool:
        """True in the modes where one device ``flannel-wg`` carries both families."""
        return self.mode != "separate"


def check_psk(value: str) -> Secret | None:
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
class Opt:
    field: str
    name: str
    kind: type
    between: tuple[int, int] | None = None
    choices: tuple[str, ...] | None = None
    check: Callable[[Any], Any] | None = None
    secret: bool = False


OPTIONS = (
    Opt("listen_port", "ListenPort", int, between=(1, 65535)),
    Opt("listen_port_v6", "ListenPortV6", int, between=(1, 65535)),
    Opt("mtu", "MTU", int, between=(OVERHEAD + 68, 65535)),
    Opt("psk", "PSK", str, check=check_psk, secret=True),
    Opt("keepalive", "PersistentKeepaliveInterval", int, between=(0, 65535)),
    Opt("mode", "Mode", str, choices=MODES),
)
KNOWN = {"type", *(o.name.lower() for o in OPTIONS)}


def _convert(opt: Opt, value: Any) -> Any:
    shown = "" if opt.secret else f", got {value!r}"
    if opt.kind is int:
        low, high = opt.between or (None, None)
        if isinstance(value, bool) or not isinstance(value, int) or (low is not None and not low <= value <= high):
            raise ConfigError(f"{BACKEND}: {opt.name} must be a whole number from {low} to {high}{shown}")
    elif not isinstance(value, str):
        raise ConfigError(f"{BACKEND}: {opt.name} must be a string{shown}")
    if opt.choices is not None and value not in opt.choices:
        raise ConfigError(f"{BACKEND}: no valid {opt.name} configured{shown}; use one of {', '.join(opt.choices)}")
    if opt.check is not None:
        try:
            return opt.check(value)
        except ValueError as exc:
            raise ConfigError(f"{BACKEND}: {opt.name} {exc}") from None
    return value


def read_table(backend: Mapping[str, Any]) -> dict[str, Any]:
    """Check a ``Backend`` object (keys lower-cased) against ``OPTIONS``; the values by field."""
    for key in backend:
        if key not in KNOWN:
            hint = did_you_mean(key, [o.name for o in OPTIONS])
            raise ConfigError(f"{BACKEND}: unknown option {key!r}{hint}")
    return {o.field: _convert(o, backend[o.name.lower()]) for o in OPTIONS if o.name.lower() in backend}


def parse_options(config: NetworkConfig) -> WgOptions:
    """Validate the wireguard options of ``config``; one-line ``ConfigError`` when one is wrong."""
    return WgOptions(**read_table(config.backend))


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
