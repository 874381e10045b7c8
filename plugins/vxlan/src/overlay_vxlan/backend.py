"""The vxlan backend: one VXLAN device per address family, and per peer a neighbour entry,
an FDB entry and an on-link route (or, with DirectRouting, a plain route to a peer on the same
L2 segment). Kernel reconcile, incremental updates and self-healing come from
``overlay_core.KernelBackend``."""

from __future__ import annotations

import ipaddress
import logging
import re

from overlay_core import Capabilities, ConfigError, KernelBackend, LeaseRequest, PeerPlan, direct_plan, hookimpl
from overlay_core.dataplane import FdbEntry, Neighbour, Route

from . import device
from .options import DEFAULT_PORT, OPTION_NAMES, VxlanOptions, device_mtus, parse_options

LOGGER = logging.getLogger("overlay.vxlan")

MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


def vtep_mac(data) -> str | None:
    mac = data.get("VtepMAC") if isinstance(data, dict) else None
    return mac.lower() if isinstance(mac, str) and MAC.match(mac.lower()) else None


class VxlanBackend(KernelBackend):
    type = "vxlan"
    capabilities = Capabilities(ipv6=True, kernel_features=("vxlan",), udp_port=DEFAULT_PORT, udp_port_key="Port")
    option_names = OPTION_NAMES

    @classmethod
    def parse_options(cls, config) -> VxlanOptions:
        return parse_options(config)

    def __init__(self, node, services=None) -> None:
        super().__init__(node, services)
        self.options: VxlanOptions
        self.index: dict[int, int] = {}  # family -> ifindex
        self.mac: dict[int, str] = {}  # family -> MAC we advertise
        self.mtu: dict[int, int] = {}

    # -- devices ---------------------------------------------------------------------------

    def _specs(self) -> list[tuple[int, device.DeviceSpec]]:
        iface, opts = self.node.iface, self.options
        specs = []
        for version, local, name in ((4, iface.public_ip, opts.device), (6, iface.public_ipv6, opts.device_v6)):
            if version in self.mtu and local is not None:
                specs.append((version, device.DeviceSpec(name, opts.vni, local, iface.index, opts.port,
                                                         opts.learning, opts.gbp, self.mtu[version])))
        return specs

    async def ensure_devices(self) -> None:
        lease = self.node.lease
        networks = [n for n in (self.node.config.network, self.node.config.ipv6_network) if n]
        links = self.services.links
        for version, spec in self._specs():
            index, mac, action = await device.ensure(links, spec, self.mac.get(version))
            subnet = None if lease is None else lease.subnet if version == 4 else lease.ipv6_subnet
            if subnet is not None:
                address = ipaddress.ip_interface(f"{subnet.network_address}/{subnet.max_prefixlen}")
                await links.configure(index, [address], networks, spec.mtu)
            self.index[version], self.mac[version] = index, mac
            if links.own(f"vxlan-v{version}", index) or action != "adopted":
                LOGGER.info("%s %s (MAC %s)", action, spec.name, mac)

    @hookimpl
    def overlay_network_config(self, config, node) -> None:
        v4, v6 = device_mtus(self.options, node.iface.mtu, node.iface.name,
                             config.ipv4 is not None, config.ipv6 is not None)
        if config.ipv4 is not None and node.iface.public_ip is None:
            raise ConfigError("vxlan: IPv4 is enabled but the external interface has no IPv4 address")
        if config.ipv6 is not None and node.iface.public_ipv6 is None:
            raise ConfigError("vxlan: IPv6 is enabled but the external interface has no IPv6 address")
        self.mtu = {k: m for k, m in ((4, v4), (6, v6)) if m is not None}

    @hookimpl
    async def overlay_lease_request(self, node) -> LeaseRequest:
        await self.ensure_devices()
        data = {4: None, 6: None}
        for version in self.index:
            data[version] = {"VNI": self.options.vni, "VtepMAC": self.mac[version]}
        return LeaseRequest("vxlan", min(self.mtu.values()), data[4], data[6])

    @hookimpl
    async def overlay_lease_acquired(self) -> None:
        await self.ensure_devices()

    # -- peers ------------------------------------------------------------------------------

    def _family_plan(self, peer, version: int) -> PeerPlan | None:
        subnet = peer.subnet if version == 4 else peer.ipv6_subnet
        index = self.index.get(version)
        if subnet is None or index is None:
            return None
        if self.options.direct_routing:
            direct = direct_plan(self.node, peer, version)
            if direct is not None:
                return direct
        public = peer.attrs.public_ip if version == 4 else peer.attrs.public_ipv6
        data = peer.attrs.backend_data if version == 4 else peer.attrs.backend_v6_data
        mac = vtep_mac(data)
        if public is None or int(public) == 0:
            return PeerPlan("skipped", (), f"no IPv{version} public IP in its lease")
        if mac is None:
            return PeerPlan("skipped", (), f"no valid VtepMAC in its IPv{version} backend data")
        gateway = subnet.network_address
        return PeerPlan("vxlan", (
            FdbEntry(index, mac, public),
            Neighbour(index, gateway, mac),
            Route(subnet, gateway, index, onlink=True),
        ))

    def plan(self, peer) -> PeerPlan:
        plans = [p for p in (self._family_plan(peer, 4), self._family_plan(peer, 6)) if p is not None]
        if not plans:
            return PeerPlan("skipped", (), "no subnet of an enabled family")
        modes = sorted({p.mode for p in plans})
        objects = tuple(o for p in plans for o in p.objects)
        reasons = "; ".join(p.reason for p in plans if p.reason)
        return PeerPlan("+".join(modes), objects, reasons)

    @hookimpl
    def overlay_report(self) -> dict:
        names = {4: self.options.device, 6: self.options.device_v6}
        return {**super().overlay_report(), "vxlan_devices": {names[v]: self.mac[v] for v in self.index}}
