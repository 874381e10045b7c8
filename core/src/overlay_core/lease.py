"""Leases: the subnet key codec and the JSON value, byte-compatible with Flannel.

Key ``10.5.34.0-24`` or ``10.5.34.0-24&fd00:5:34::-64``; value
``{"PublicIP":"192.0.2.1","PublicIPv6":null,"BackendType":"vxlan","BackendData":{...}}``.
An IPv6-only lease has the IPv4 part ``0.0.0.0-0``, as Flannel writes it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Any

_KEY = re.compile(r"(\d+\.\d+\.\d+\.\d+)-(\d+)(?:&([a-f\d:]+)-(\d+))?")
_NO_V4 = IPv4Network("0.0.0.0/0")
UNSET_IP = IPv4Address("0.0.0.0")


def parse_subnet_key(key: str) -> tuple[IPv4Network | None, IPv6Network | None]:
    """Parse the last path element of a lease key; ``ValueError`` if it is not one."""
    match = _KEY.fullmatch(key.rsplit("/", 1)[-1])
    if not match:
        raise ValueError(f"not a subnet key: {key!r}")
    v4, v4len, v6, v6len = match.groups()
    if int(v4len) > 32 or (v6len is not None and int(v6len) > 128):
        raise ValueError(f"not a subnet key: {key!r}")
    try:
        net4 = IPv4Network(f"{v4}/{v4len}")
        net6 = IPv6Network(f"{v6}/{v6len}") if v6 is not None else None
    except ValueError:
        raise ValueError(f"not a subnet key: {key!r}") from None
    if net4 == _NO_V4:
        if net6 is None:
            raise ValueError(f"not a subnet key: {key!r}")
        return None, net6
    return net4, net6


def make_subnet_key(subnet: IPv4Network | None, ipv6_subnet: IPv6Network | None = None) -> str:
    v4 = subnet or _NO_V4
    key = f"{v4.network_address}-{v4.prefixlen}"
    if ipv6_subnet is not None:
        key += f"&{ipv6_subnet.network_address}-{ipv6_subnet.prefixlen}"
    return key


def _compact(data: Any) -> str:
    return json.dumps(data, separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class LeaseAttrs:
    """What a lease advertises: how to reach the node that holds it."""

    public_ip: IPv4Address = UNSET_IP
    public_ipv6: IPv6Address | None = None
    backend_type: str = ""
    backend_data: Any = None
    backend_v6_data: Any = None

    def to_json(self) -> str:
        """Flannel's exact encoding: field order, ``null`` IPv6, omitted empty fields."""
        parts = [f'"PublicIP":"{self.public_ip}"']
        parts.append(
            f'"PublicIPv6":{"null" if self.public_ipv6 is None else chr(34) + str(self.public_ipv6) + chr(34)}'
        )
        if self.backend_type:
            parts.append(f'"BackendType":{_compact(self.backend_type)}')
        if self.backend_data is not None:
            parts.append(f'"BackendData":{_compact(self.backend_data)}')
        if self.backend_v6_data is not None:
            parts.append(f'"BackendV6Data":{_compact(self.backend_v6_data)}')
        return "{" + ",".join(parts) + "}"

    @classmethod
    def from_json(cls, raw: bytes | str) -> LeaseAttrs:
        """Decode a lease value; ``ValueError`` with a short reason when malformed."""
        try:
            data = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"value is not JSON ({exc})") from None
        if not isinstance(data, dict):
            raise ValueError("value is not a JSON object")
        fields = {str(k).lower(): v for k, v in data.items()}
        for name in ("publicip", "publicipv6"):
            if fields.get(name) is not None and not isinstance(fields[name], str):
                raise ValueError(f"{name} is not a string")
        try:
            ip = fields.get("publicip")
            public_ip = IPv4Address(ip) if ip else UNSET_IP
            ip6 = fields.get("publicipv6")
            public_ipv6 = IPv6Address(ip6) if ip6 else None
        except (ValueError, TypeError) as exc:
            raise ValueError(f"bad public IP ({exc})") from None
        btype = fields.get("backendtype") or ""
        if not isinstance(btype, str):
            raise ValueError("BackendType is not a string")
        return cls(
            public_ip, public_ipv6, btype, fields.get("backenddata"), fields.get("backendv6data")
        )


@dataclass(frozen=True, slots=True)
class Lease:
    """A subnet lease as stored under ``<prefix>/subnets/<key>``.

    ``revision`` is the key's etcd mod revision; ``lease_id`` its etcd lease (0 means a
    reservation: a key without TTL that an administrator put there on purpose).
    """

    subnet: IPv4Network | None
    ipv6_subnet: IPv6Network | None
    attrs: LeaseAttrs
    revision: int = 0
    lease_id: int = 0

    @property
    def key(self) -> str:
        return make_subnet_key(self.subnet, self.ipv6_subnet)

    @property
    def is_reservation(self) -> bool:
        return self.lease_id == 0

    def with_attrs(self, attrs: LeaseAttrs) -> Lease:
        return replace(self, attrs=attrs)

    def describe(self) -> str:
        nets = " ".join(str(n) for n in (self.subnet, self.ipv6_subnet) if n is not None)
        ip = self.attrs.public_ip if self.subnet else self.attrs.public_ipv6
        return f"{nets} at {ip}"


def lease_from_kv(key: str, value: bytes | str, revision: int = 0, lease_id: int = 0) -> Lease:
    """Build a lease from a store key and value; ``ValueError`` when either is malformed."""
    subnet, ipv6_subnet = parse_subnet_key(key)
    return Lease(subnet, ipv6_subnet, LeaseAttrs.from_json(value), revision, lease_id)
