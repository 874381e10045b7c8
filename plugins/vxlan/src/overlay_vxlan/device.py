"""The VXLAN devices ``flannel.<VNI>`` and ``flannel-v6.<VNI>``: adopt, create or replace.

An existing device with compatible settings is adopted as it is (its MAC too), so a restart
changes nothing in the kernel and nothing in the lease. An incompatible one is replaced; a
vanished one is recreated. Both keep the MAC we advertised when there is one.
"""

from __future__ import annotations

import ipaddress
import random
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address

import trio
from overlay_core.dataplane import LinkInfo


@dataclass(frozen=True)
class DeviceSpec:
    name: str
    vni: int
    local: IPv4Address | IPv6Address
    link: int
    port: int
    learning: bool
    gbp: bool
    mtu: int


@dataclass(frozen=True)
class DeviceState:
    """What the kernel reports for a link of that name."""

    index: int
    mac: str
    kind: str
    vni: int | None = None
    local: IPv4Address | IPv6Address | None = None
    link: int | None = None
    port: int | None = None
    learning: bool | None = None
    gbp: bool = False


def random_mac(rand: random.Random | None = None) -> str:
    """A random locally administered unicast MAC."""
    octets = [(rand or random.SystemRandom()).randrange(256) for _ in range(6)]
    octets[0] = (octets[0] & 0xFE) | 0x02
    return ":".join(f"{o:02x}" for o in octets)


def incompatible(spec: DeviceSpec, state: DeviceState) -> str | None:
    """Why ``state`` cannot serve as ``spec`` (None when it can be adopted)."""
    if state.kind != "vxlan":
        return f"it is a {state.kind or 'non-vxlan'} device"
    checks = (("VNI", spec.vni, state.vni), ("local address", spec.local, state.local),
              ("underlay device", spec.link, state.link), ("port", spec.port, state.port),
              ("learning", spec.learning, state.learning), ("GBP", spec.gbp, state.gbp))
    for what, want, have in checks:
        if have is not None and want != have:
            return f"its {what} is {have}, not {want}"
    return None


def state_of(link: LinkInfo) -> DeviceState:
    if link.kind != "vxlan":
        return DeviceState(link.index, link.mac or "", link.kind)
    data = link.data
    local = data.get("IFLA_VXLAN_LOCAL") or data.get("IFLA_VXLAN_LOCAL6")
    learning = data.get("IFLA_VXLAN_LEARNING")
    return DeviceState(
        link.index, link.mac or "", link.kind, data.get("IFLA_VXLAN_ID"),
        ipaddress.ip_address(local) if local else None, data.get("IFLA_VXLAN_LINK"),
        data.get("IFLA_VXLAN_PORT"), None if learning is None else bool(learning),
        "IFLA_VXLAN_GBP" in data,
    )


def create_attrs(spec: DeviceSpec, mac: str) -> dict:
    """The link attributes of a new device for ``spec`` with MAC ``mac``."""
    kw = {"vxlan_id": spec.vni, "vxlan_link": spec.link, "vxlan_port": spec.port,
          "vxlan_learning": int(spec.learning), "address": mac, "mtu": spec.mtu}
    kw["vxlan_local" if spec.local.version == 4 else "vxlan_local6"] = str(spec.local)
    if spec.gbp:
        kw["vxlan_gbp"] = True
    return kw


def _no_router_advertisements(name: str) -> None:
    try:
        with open(f"/proc/sys/net/ipv6/conf/{name}/accept_ra", "w") as fh:
            fh.write("0")
    except OSError:
        pass


async def ensure(links, spec: DeviceSpec, mac: str | None) -> tuple[int, str, str]:
    """Make the device exist as ``spec`` (``links``: the agent's ``Links``); returns
    ``(ifindex, mac, what was done)``. The MAC we advertised (else the replaced device's, else a
    random one) is kept."""

    def attrs(previous: LinkInfo | None) -> dict:
        old = previous.mac if previous is not None and previous.kind == "vxlan" else None
        return create_attrs(spec, mac or old or random_mac())

    info, action = await links.ensure(spec.name, "vxlan", lambda link: incompatible(spec, state_of(link)), attrs)
    if action != "adopted" and spec.local.version == 6:
        await trio.to_thread.run_sync(_no_router_advertisements, spec.name)
    return info.index, info.mac or "", action
