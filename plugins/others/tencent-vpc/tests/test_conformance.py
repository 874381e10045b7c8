"""tencent-vpc against the conformance kit, in the lab's VPC (fake API and metadata service in a
router namespace, overlay_tencent_vpc.lab). Its objects live in the VPC's route table, not on the
node: the drift check deletes the node's own route there, through the API, as a person in the
console would; when a node changes its address, the kit removes its old route as the operator must.
The credentials go in the options, so the kit's secrets check looks for the key. ``cleanup`` must
remove the node's own route from the VPC."""

from overlay_core.testing.kit import Conformance
from overlay_tencent_vpc.lab import CLOUD, console, router_routes


def delete_own_route(lab, node):
    """Delete ``node``'s VPC route; the predicate says when the agent has put it back."""
    subnet = lab.readyz(node)[1]["subnet"]
    console(lab, "delete", subnet)
    return lambda: any(line.split()[0] == subnet for line in router_routes(lab).splitlines() if line)


class TestConformance(Conformance):
    backend = "tencent-vpc"
    options = {"AccessKeyID": CLOUD.secret_id, "AccessKeySecret": CLOUD.secret_key}
    drift = staticmethod(delete_own_route)

    def outside_of(self, lab, node):
        """The node's routes in the VPC (the router's kernel table mirrors it)."""
        return "\n".join(line for line in router_routes(lab).splitlines() if f" via {node.ip} " in f"{line} ")

    def public_ip_moved(self, lab, node, old_ip, subnet):
        """tencent-vpc never takes over a route through another gateway (the old address could be
        another instance by now): the operator removes the node's old route, as its log asks."""
        console(lab, "delete", subnet)
