"""The ``ipip`` backend: one-to-many IPv4-in-IPv4 device ``flannel.ipip``; per peer a route
``<peer subnet> via <peer public IP> dev flannel.ipip onlink`` (or, with DirectRouting and a peer
on the same segment, a plain route on the external interface)."""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass
from ipaddress import IPv4Address

from overlay_core import Capabilities, ConfigError, KernelBackend, LeaseRequest, PeerPlan, direct_plan, hookimpl
from overlay_core.dataplane import LinkInfo, Route

__version__ = "0.1.0"

LOGGER = logging.getLogger("overlay.ipip")

DEVICE = "flannel.ipip"
OVERHEAD = 20  # the outer IPv4 header


@dataclass(frozen=True)
class IpipOptions:
    direct_routing: bool = False


@dataclass(frozen=True)
class TunnelSpec:
    name: str
    local: IPv4Address
    link: int
    mtu: int


def why_not(spec: TunnelSpec, link: LinkInfo) -> str | None:
    """Why an existing device cannot be adopted as ``spec`` (None: adopt it)."""
    if link.kind != "ipip":
        return f"it is a {link.kind or 'non-ipip'} device"
    local = link.data.get("IFLA_IPTUN_LOCAL")
    remote = link.data.get("IFLA_IPTUN_REMOTE")
    if local and ipaddress.ip_address(local) != spec.local:
        return f"its local address is {local}, not {spec.local}"
    if remote and remote != "0.0.0.0":
        return f"it has a fixed remote {remote}"
    return None


def create_attrs(spec: TunnelSpec) -> dict:
    return {"ipip_local": str(spec.local), "ipip_remote": "0.0.0.0", "ipip_link": spec.link, "mtu": spec.mtu}


class IpipBackend(KernelBackend):
    type = "ipip"
    capabilities = Capabilities(kernel_features=("ipip",))
    option_names = ("DirectRouting",)

    @classmethod
    def parse_options(cls, config) -> IpipOptions:
        if config.ipv6 is not None:
            raise ConfigError("ipip carries IPv4 only: remove EnableIPv6/IPv6Network, or use vxlan")
        direct = config.backend_option("directrouting", False)
        if not isinstance(direct, bool):
            raise ConfigError(f"ipip: DirectRouting must be true or false, got {direct!r}")
        return IpipOptions(direct)

    def __init__(self, node, services=None) -> None:
        super().__init__(node, services)
        self.options: IpipOptions
        self.index: int | None = None

    def spec(self) -> TunnelSpec:
        iface = self.node.iface
        assert iface.address is not None
        return TunnelSpec(DEVICE, iface.address, iface.index, iface.mtu - OVERHEAD)

    async def ensure_devices(self) -> None:
        spec, lease = self.spec(), self.node.lease
        links = self.services.links
        info, action = await links.ensure(spec.name, "ipip", lambda link: why_not(spec, link),
                                          lambda previous: create_attrs(spec))
        if lease is not None and lease.subnet is not None:
            address = ipaddress.ip_interface(f"{lease.subnet.network_address}/32")
            await links.configure(info.index, [address], [self.node.config.network], spec.mtu)
        if links.own("ipip", info.index) or action != "adopted":
            LOGGER.info("%s %s (local %s, MTU %d)", action, spec.name, spec.local, spec.mtu)
        self.index = info.index

    @hookimpl
    def overlay_network_config(self, node) -> None:
        if node.iface.mtu - OVERHEAD < 68:
            raise ConfigError(f"ipip: {node.iface.name}'s MTU {node.iface.mtu} leaves no room for the tunnel")

    @hookimpl
    async def overlay_lease_request(self, node) -> LeaseRequest:
        await self.ensure_devices()
        return LeaseRequest("ipip", node.iface.mtu - OVERHEAD)

    @hookimpl
    async def overlay_lease_acquired(self) -> None:
        await self.ensure_devices()

    def plan(self, peer) -> PeerPlan:
        if peer.subnet is None or int(peer.attrs.public_ip) == 0:
            return PeerPlan("skipped", (), "no IPv4 subnet or public IP in its lease")
        if self.options.direct_routing:
            direct = direct_plan(self.node, peer, 4)
            if direct is not None:
                return direct
        assert self.index is not None
        return PeerPlan("ipip", (Route(peer.subnet, peer.attrs.public_ip, self.index, onlink=True),))
