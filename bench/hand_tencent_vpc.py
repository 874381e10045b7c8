"""Hand-configured baseline of tencent-vpc for bench/dataplane.py: the VPC router's routes written
by hand (``ip route`` in the lab's router namespace), as the TencentCloud console would hold them
after Flannel's CreateRoutes, and the subnet files Flannel would write. The packets take the same
path either way (node -> VPC router -> node): the comparison shows that the agent adds nothing to
the data plane, which is the point for a cloud-route backend (its work is on the control plane:
see bench/tencent_bench.py for API calls and time to route)."""

from __future__ import annotations

from overlay_core.testing.netns import ip
from overlay_tencent_vpc.lab import router_ns


def by_hand(lab) -> None:
    for i, node in enumerate(lab.state.nodes, start=1):
        ip("route", "replace", f"10.5.{i}.0/24", "via", node.ip, ns=router_ns(lab))
        with open(node.subnet_file, "w") as fh:
            fh.write(f"FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET=10.5.{i}.1/24\nFLANNEL_MTU=1500\n"
                     "FLANNEL_IPMASQ=false\n")
