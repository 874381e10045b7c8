"""The ``host-gw`` backend: per peer, a route to its subnet via its public IP.

No encapsulation, so no MTU cost; but every peer must be on the external interface's layer-2
segment. A peer that is not is never silently broken: it is skipped, logged once with the
reason, and counted in ``/readyz`` (``unreachable_peers``) and ``lab status``.
"""

from __future__ import annotations

from overlay_core import Capabilities, ConfigError, KernelBackend, LeaseRequest, PeerPlan, direct_plan, hookimpl

__version__ = "0.1.0"


class HostGwBackend(KernelBackend):
    type = "host-gw"
    capabilities = Capabilities(ipv6=True)
    option_names = ()

    @hookimpl
    def overlay_network_config(self, config, node) -> None:
        iface = node.iface
        if iface.public_ip is not None and iface.public_ip != iface.address:
            raise ConfigError(
                f"host-gw: public IP {iface.public_ip} differs from {iface.name}'s address "
                f"{iface.address} (NAT?); host-gw needs peers to reach this node directly: use vxlan"
            )

    @hookimpl
    def overlay_lease_request(self, node) -> LeaseRequest:
        return LeaseRequest("host-gw", node.iface.mtu)

    def plan(self, peer) -> PeerPlan:
        objects, reasons = [], []
        for version, subnet, via in ((4, peer.subnet, peer.attrs.public_ip),
                                     (6, peer.ipv6_subnet, peer.attrs.public_ipv6)):
            enabled = (self.node.config.ipv4 if version == 4 else self.node.config.ipv6) is not None
            if not enabled or subnet is None:
                continue
            plan = direct_plan(self.node, peer, version)
            if plan is None:
                reasons.append(f"{via} is not on {self.node.iface.name}'s segment; host-gw needs "
                               "layer-2 adjacency (use vxlan, or vxlan with DirectRouting)")
                continue
            objects.extend(plan.objects)
        if reasons:
            return PeerPlan("skipped", (), "; ".join(reasons))
        return PeerPlan("direct", tuple(objects))

    @hookimpl
    def overlay_report(self) -> dict:
        report = super().overlay_report()
        return {**report, "unreachable_peers": report["peer_modes"].get("skipped", 0)}
