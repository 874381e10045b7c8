"""The ``alloc`` backend: take a subnet lease and program nothing.

Useful when something else moves the packets (a cloud route table, a router you configure
yourself): the node still gets a unique subnet and the subnet file for its CNI plugin. Like
Flannel's, its lease carries no ``BackendType``, so Flannel alloc nodes and these agree.
"""

from __future__ import annotations

from overlay_core import Backend, Capabilities, LeaseRequest, hookimpl

__version__ = "0.1.0"


class AllocBackend(Backend):
    type = "alloc"
    capabilities = Capabilities(moves_packets=False)
    option_names = ()
    lease_type = ""

    @hookimpl
    def overlay_lease_request(self, node) -> LeaseRequest:
        return LeaseRequest(backend_type="", mtu=node.iface.mtu)
