"""The ``Backend`` options of an ipsec network, with Flannel's names, defaults and limits.

Read with core's ``read_options`` (types, the PSK's minimum length, one-line errors that never
show the PSK); on top of it: unknown keys (with a "did you mean"), the required PSK and the
address family. The ESP proposal is checked here only for its shape; whether charon knows every
keyword is asked of charon itself (``ViciClient.check_esp_proposal``), because the keyword set
depends on the crypto plugins the installed charon loads.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from overlay_core import ConfigError, NetworkConfig
from overlay_core.errors import did_you_mean
from overlay_core.options import option, read_options
from overlay_core.services import Secret

BACKEND = "ipsec"
MIN_PSK_LENGTH = 96  # Flannel's minPasswordLength
DEFAULT_ESP_PROPOSAL = "aes128gcm16-sha256-prfsha256-ecp256"
IPSEC_OVERHEAD = 77  # outer IPv4 20 + SPI 4 + sequence 4 + IV 16 + pad 15 + pad length 1 + next header 1 + ICV 16
UDP_ENCAP_OVERHEAD = 8
LIBIPSEC_TUN_MTU = 1400  # kernel-libipsec's ipsec0, fixed at creation
# strongSwan proposal syntax: algorithm keywords joined by '-' (one proposal; Flannel passes one)
_PROPOSAL = re.compile(r"[a-z0-9_]+(?:-[a-z0-9_]+)*")


def _check_proposal(value: str) -> None:
    if not _PROPOSAL.fullmatch(value):
        raise ValueError("must be one strongSwan proposal: lower-case algorithm keywords joined by '-', "
                         "for example 'aes128gcm16-sha256-prfsha256-ecp256'")


@dataclass(frozen=True)
class IpsecOptions:
    psk: Secret = option("PSK", None, kind=Secret, min_len=MIN_PSK_LENGTH)  # required: see parse_options
    udp_encap: bool = option("UDPEncap", False)
    esp_proposal: str = option("ESPProposal", DEFAULT_ESP_PROPOSAL, check=_check_proposal)

    def mtu(self, external_mtu: int, libipsec: bool = False) -> int:
        """Pod MTU as Flannel computes it: external MTU − 77, − 8 more with UDP encapsulation.
        kernel-libipsec always encapsulates in UDP (charon forces NAT-T: it cannot send raw ESP)
        and its TUN device ``ipsec0`` has a fixed MTU of 1400 (not configurable in 5.9), so in
        that mode the 8 are always taken and the result is at most 1400."""
        mtu = external_mtu - IPSEC_OVERHEAD - (UDP_ENCAP_OVERHEAD if self.udp_encap or libipsec else 0)
        return min(mtu, LIBIPSEC_TUN_MTU) if libipsec else mtu


KEYS = ("PSK", "UDPEncap", "ESPProposal")  # the option names above, for unknown-key hints


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
    known = {key.lower(): key for key in KEYS}
    for key in (str(k).lower() for k in config.backend if str(k).lower() != "type"):
        if key not in known:
            hint = did_you_mean(key, list(KEYS))
            raise ConfigError(f"{BACKEND}: unknown option '{key}'{hint}")
    options = read_options(IpsecOptions, config, backend=BACKEND)
    if options.psk is None:
        raise ConfigError(f"{BACKEND}: PSK is required (at least {MIN_PSK_LENGTH} characters; generate one with "
                          "`openssl rand -base64 96`)")
    return options
