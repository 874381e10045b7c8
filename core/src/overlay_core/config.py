"""The network config JSON stored at ``<prefix>/config``, with Flannel's defaults and checks.

Field names are matched case-insensitively and unknown top-level keys are ignored by the agent,
as Flannel's Go decoder does (``overlay-core config check`` refuses them, see
``check_top_level_keys``). One deliberate difference: a config without ``Backend`` selects
``vxlan``, the documented default (Flannel's code falls back to ``udp``); the agent warns about it.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Any

from .errors import ConfigError, did_you_mean

DEFAULT_BACKEND = "vxlan"
DEFAULTED_BACKEND_WARNING = (
    "the network config has no Backend: overlay runs vxlan (Flannel's documented default), but "
    "Flannel nodes sharing this store would run udp (its code's default); set Backend.Type explicitly"
)
TOP_LEVEL_KEYS = (
    "Network", "SubnetLen", "SubnetMin", "SubnetMax", "EnableIPv4", "EnableIPv6", "IPv6Network",
    "IPv6SubnetLen", "IPv6SubnetMin", "IPv6SubnetMax", "EnableNFTables", "Backend",
)


@dataclass(frozen=True)
class FamilyRange:
    """The allocatable subnets of one address family."""

    network: IPv4Network | IPv6Network
    subnet_len: int
    subnet_min: IPv4Address | IPv6Address
    subnet_max: IPv4Address | IPv6Address

    @property
    def step(self) -> int:
        return 1 << (self.network.max_prefixlen - self.subnet_len)

    @property
    def capacity(self) -> int:
        return (int(self.subnet_max) - int(self.subnet_min)) // self.step + 1

    def contains(self, subnet: IPv4Network | IPv6Network | None) -> bool:
        """True when ``subnet`` is one this config could hand out."""
        if subnet is None or subnet.version != self.network.version:
            return False
        base = int(subnet.network_address)
        return (
            subnet.prefixlen == self.subnet_len
            and int(self.subnet_min) <= base <= int(self.subnet_max)
        )

    def subnets(self) -> Iterator[IPv4Network | IPv6Network]:
        """Every allocatable subnet, lowest first."""
        cls = IPv4Network if self.network.version == 4 else IPv6Network
        for base in range(int(self.subnet_min), int(self.subnet_max) + 1, self.step):
            yield cls((base, self.subnet_len))


CREDENTIAL_WORDS = ("secret", "psk", "password", "token", "accesskey", "privatekey")


@dataclass(frozen=True)
class NetworkConfig:
    """A validated network config. ``backend`` holds the raw ``Backend`` object."""

    ipv4: FamilyRange | None
    ipv6: FamilyRange | None
    enable_nftables: bool = False
    backend: Mapping[str, Any] = field(default_factory=dict)
    raw: str = ""
    backend_defaulted: bool = False  # no Backend in the config: vxlan was chosen
    keys: tuple[str, ...] = ()  # top-level keys as written
    backend_keys: tuple[str, ...] = ()  # keys of the Backend object as written

    @property
    def backend_type(self) -> str:
        return str(self.backend.get("type", DEFAULT_BACKEND)).lower()

    @property
    def network(self) -> IPv4Network | None:
        return self.ipv4.network if self.ipv4 else None  # type: ignore[return-value]

    @property
    def ipv6_network(self) -> IPv6Network | None:
        return self.ipv6.network if self.ipv6 else None  # type: ignore[return-value]

    def backend_option(self, name: str, default: Any = None) -> Any:
        """A key of the ``Backend`` object, matched case-insensitively."""
        return self.backend.get(name.lower(), default)

    def shown(self) -> str:
        """``raw`` for a log line, with the values of ``Backend`` keys that name a credential
        (``CREDENTIAL_WORDS``: a PSK, TencentCloud's AccessKeyID/AccessKeySecret) replaced by ``***``."""
        try:
            data = json.loads(self.raw)
        except ValueError:
            return "(not shown: not JSON)"
        for key, backend in data.items() if isinstance(data, dict) else ():
            if key.lower() == "backend" and isinstance(backend, dict):
                for name in backend:
                    if any(word in name.lower() for word in CREDENTIAL_WORDS):
                        backend[name] = "***"
        return json.dumps(data, separators=(",", ":"))

    def same_network(self, other: NetworkConfig) -> bool:
        """True when both configs hand out the same subnets with the same backend."""
        return (self.backend_type, self.ipv4, self.ipv6) == (
            other.backend_type,
            other.ipv4,
            other.ipv6,
        )


def _lower_keys(obj: Mapping[str, Any]) -> dict[str, Any]:
    return {str(k).lower(): v for k, v in obj.items()}


def _typed(obj: Mapping[str, Any], key: str, kind: type, name: str) -> Any:
    value = obj.get(key)
    if value is None:
        return None
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(f"{name} must be a whole number, got {json.dumps(value)}")
    if kind is not int and not isinstance(value, kind):
        raise ConfigError(f"{name} must be a {kind.__name__}, got {json.dumps(value)}")
    return value


def _family(
    obj: Mapping[str, Any], version: int, prefix: str, label: str
) -> FamilyRange:
    """Validate and default one family, following Flannel's rules (reference §1.3)."""
    bits = 32 if version == 4 else 128
    limit = 30 if version == 4 else 126
    smallest = 28 if version == 4 else 124
    cidr = _typed(obj, f"{prefix}network", str, label)
    if not cidr:
        raise ConfigError(f"please define a correct {label} parameter in the network config")
    try:
        network = ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        raise ConfigError(f"{label} {cidr!r} is not a valid CIDR") from None
    if network.version != version:
        raise ConfigError(f"{label} {cidr!r} must be an IPv{version} CIDR")
    if network.prefixlen == 0:
        raise ConfigError(f"please define a correct {label} parameter in the network config")
    lenkey = f"{prefix}subnetlen"
    lenname = "SubnetLen" if version == 4 else "IPv6SubnetLen"
    subnet_len = _typed(obj, lenkey, int, lenname) or 0
    if subnet_len < 0:
        raise ConfigError(f"{lenname} must not be negative")
    if subnet_len:
        if subnet_len > limit:
            raise ConfigError(f"{lenname} must be less than /{limit + 1}")
        if subnet_len < network.prefixlen + 2:
            raise ConfigError(
                f"{label} {network} must be able to accommodate at least four subnets "
                f"of /{subnet_len}"
            )
    else:
        if network.prefixlen > smallest:
            raise ConfigError(
                f"{label} {network} is too small. Minimum useful network prefix is /{smallest}"
            )
        default = 24 if version == 4 else 64
        subnet_len = default if network.prefixlen <= default - 2 else network.prefixlen + 2
    size = 1 << (bits - subnet_len)
    base = int(network.network_address)
    bounds = []
    for which, default_value in (("min", base + size), ("max", base + network.num_addresses - size)):
        key = f"{prefix}subnet{which}"
        name = f"{'IPv6' if version == 6 else ''}Subnet{which.capitalize()}"
        text = _typed(obj, key, str, name)
        if not text:
            bounds.append(default_value)
            continue
        try:
            addr = ipaddress.ip_address(text)
        except ValueError:
            raise ConfigError(f"{name} {text!r} is not a valid IP address") from None
        if addr.version != version or addr not in network:
            raise ConfigError(f"{name} {text} is not in the range of the {label} {network}")
        if int(addr) % size:
            raise ConfigError(f"{name} is not on a {lenname} boundary: {text}")
        bounds.append(int(addr))
    if bounds[0] > bounds[1]:
        raise ConfigError(f"SubnetMin must not be above SubnetMax in {label} {network}")
    cls = IPv4Address if version == 4 else IPv6Address
    return FamilyRange(network, subnet_len, cls(bounds[0]), cls(bounds[1]))


def parse_config(text: str | bytes) -> NetworkConfig:
    """Parse and validate a network config; raise ``ConfigError`` with a one-line reason."""
    if isinstance(text, bytes):
        try:
            text = text.decode()
        except UnicodeDecodeError:
            raise ConfigError("network config is not UTF-8 text") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"network config is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    if not isinstance(data, dict):
        raise ConfigError("network config must be a JSON object")
    obj = _lower_keys(data)
    enable_v4 = obj.get("enableipv4", True)
    enable_v6 = obj.get("enableipv6", False)
    nft = obj.get("enablenftables", False)
    for name, value in (("EnableIPv4", enable_v4), ("EnableIPv6", enable_v6), ("EnableNFTables", nft)):
        if not isinstance(value, bool):
            raise ConfigError(f"{name} must be true or false, got {json.dumps(value)}")
    if not enable_v4 and not enable_v6:
        raise ConfigError("both EnableIPv4 and EnableIPv6 are false: enable at least one")
    ipv4 = _family(obj, 4, "", "Network") if enable_v4 else None
    ipv6 = _family(obj, 6, "ipv6", "IPv6Network") if enable_v6 else None
    written = obj.get("backend")
    defaulted = written is None or written == {}
    backend = {"type": DEFAULT_BACKEND} if defaulted else written
    if not isinstance(backend, dict):
        raise ConfigError("Backend must be a JSON object such as {\"Type\": \"vxlan\"}")
    backend_keys = tuple(str(k) for k in backend) if not defaulted else ()
    backend = _lower_keys(backend)
    kind = backend.get("type")
    if kind is not None and not isinstance(kind, str):
        raise ConfigError(f"Backend.Type must be a string such as \"vxlan\", got {json.dumps(kind)}")
    if not kind:
        raise ConfigError("Backend.Type is missing: set it, for example {\"Type\": \"vxlan\"}")
    return NetworkConfig(ipv4, ipv6, nft, backend, text, defaulted, tuple(str(k) for k in data), backend_keys)


def check_top_level_keys(config: NetworkConfig) -> None:
    """Refuse a top-level key Flannel does not know (a typo the agent would silently ignore)."""
    known = {k.lower() for k in TOP_LEVEL_KEYS}
    for key in config.keys:
        if key.lower() not in known:
            raise ConfigError(f"unknown key {key!r} in the network config{did_you_mean(key, TOP_LEVEL_KEYS)}")
