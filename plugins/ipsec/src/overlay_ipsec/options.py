"""The ``Backend`` options of an ipsec network, with Flannel's names, defaults and limits.

Table-driven (one :class:`Option` row per key) so the table ports to core's ``read_options``
unchanged in meaning. The ESP proposal is checked here only for its shape; whether charon
knows every keyword is asked of charon itself (``ViciClient.check_esp_proposal``), because the
keyword set depends on the crypto plugins the installed charon loads.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from overlay_core import ConfigError, NetworkConfig
from overlay_core.services import Secret

BACKEND = "ipsec"
MIN_PSK_LENGTH = 96  # Flannel's minPasswordLength
DEFAULT_ESP_PROPOSAL = "aes128gcm16-sha256-prfsha256-ecp256"
IPSEC_OVERHEAD = 77  # outer IPv4 20 + SPI 4 + sequence 4 + IV 16 + pad 15 + pad length 1 + next header 1 + ICV 16
UDP_ENCAP_OVERHEAD = 8
LIBIPSEC_TUN_MTU = 1400  # kernel-libipsec's ipsec0, fixed at creation
# strongSwan proposal syntax: algorithm keywords joined by '-' (one proposal; Flannel passes one)
_PROPOSAL = re.compile(r"[a-z0-9_]+(?:-[a-z0-9_]+)*")


@dataclass(frozen=True)
class IpsecOptions:
    psk: Secret
    udp_encap: bool = False
    esp_proposal: str = DEFAULT_ESP_PROPOSAL

    def mtu(self, external_mtu: int, libipsec: bool = False) -> int:
        """Pod MTU as Flannel computes it: external MTU − 77, − 8 more with UDP encapsulation.
        kernel-libipsec always encapsulates in UDP (charon forces NAT-T: it cannot send raw ESP)
        and its TUN device ``ipsec0`` has a fixed MTU of 1400 (not configurable in 5.9), so in
        that mode the 8 are always taken and the result is at most 1400."""
        mtu = external_mtu - IPSEC_OVERHEAD - (UDP_ENCAP_OVERHEAD if self.udp_encap or libipsec else 0)
        return min(mtu, LIBIPSEC_TUN_MTU) if libipsec else mtu


def _check_psk(value: Secret) -> None:
    if len(value.reveal()) < MIN_PSK_LENGTH:
        raise ValueError(f"must be at least {MIN_PSK_LENGTH} characters (generate one with "
                         "`openssl rand -base64 96`)")


def _check_proposal(value: str) -> None:
    if not _PROPOSAL.fullmatch(value):
        raise ValueError("must be one strongSwan proposal: lower-case algorithm keywords joined by '-', "
                         "for example 'aes128gcm16-sha256-prfsha256-ecp256'")


@dataclass(frozen=True)
class Option:
    """One backend option: JSON key, dataclass field, kind, default (None = required), check."""

    key: str
    field: str
    kind: type
    default: Any
    check: Callable[[Any], None] | None = None


OPTIONS = (
    Option("PSK", "psk", Secret, None, _check_psk),
    Option("UDPEncap", "udp_encap", bool, False),
    Option("ESPProposal", "esp_proposal", str, DEFAULT_ESP_PROPOSAL, _check_proposal),
)


def _convert(option: Option, raw: Any) -> Any:
    """The raw JSON value as the option's kind; ``ValueError`` that never shows a secret."""
    if option.kind is bool:
        if not isinstance(raw, bool):
            raise ValueError(f"must be true or false, got {raw!r}")
        return raw
    if not isinstance(raw, str):
        shown = "a " + type(raw).__name__ if option.kind is Secret else repr(raw)
        raise ValueError(f"must be a string, got {shown}")
    return Secret(raw) if option.kind is Secret else raw


def _check_family(config: NetworkConfig) -> None:
    """IPv4 only, as Flannel. Dual-stack is refused too: the ipsec backend would leave the IPv6
    pod traffic without any path, which is better said at startup than found later."""
    if config.ipv4 is None:
        raise ConfigError("ipsec: carries IPv4 only (as Flannel); this network is IPv6-only: set 'Network' "
                          "or use the wireguard backend")
    if config.ipv6 is not None:
        raise ConfigError("ipsec: carries IPv4 only (as Flannel); set EnableIPv6 to false or use the "
                          "wireguard backend for dual-stack")


def parse_options(config: NetworkConfig) -> IpsecOptions:
    """Validate the ipsec options of ``config``; one-line ``ConfigError`` when invalid."""
    _check_family(config)
    given = {str(k).lower(): v for k, v in config.backend.items() if str(k).lower() != "type"}
    known = {o.key.lower(): o for o in OPTIONS}
    for key in given:
        if key not in known:
            close = difflib.get_close_matches(key, list(known), n=1)
            hint = f" (did you mean '{known[close[0]].key}'?)" if close else ""
            raise ConfigError(f"{BACKEND}: unknown option '{key}'{hint}")
    values: dict[str, Any] = {}
    for option in OPTIONS:
        raw = given.get(option.key.lower())
        if raw is None:
            if option.default is None:
                raise ConfigError(f"{BACKEND}: {option.key} is required (at least {MIN_PSK_LENGTH} characters)")
            continue
        try:
            value = _convert(option, raw)
            if option.check is not None:
                option.check(value)
        except ValueError as exc:
            raise ConfigError(f"{BACKEND}: {option.key} {exc}") from None
        values[option.field] = value
    return IpsecOptions(**values)
