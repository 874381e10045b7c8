"""tencent-vpc against the conformance kit, in the lab's VPC (fake API and metadata service in a
router namespace, overlay_tencent_vpc.lab). Its objects live in the VPC's route table, not on the
node: the drift check deletes the node's own route there, through the API, as a person in the
console would."""

from overlay_core.testing.kit import Conformance
from overlay_tencent_vpc.lab import console, router_routes


def delete_own_route(lab, node):
    """Delete ``node``'s VPC route; the predicate says when the agent has put it back."""
    subnet = lab.readyz(node)[1]["subnet"]
    console(lab, "delete", subnet)
    return lambda: any(line.split()[0] == subnet for line in router_routes(lab).splitlines() if line)


class TestConformance(Conformance):
    backend = "tencent-vpc"
    drift = staticmethod(delete_own_route)
