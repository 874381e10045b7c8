from ipaddress import IPv4Address, IPv4Network
from types import SimpleNamespace

from overlay_alloc import AllocBackend
from overlay_core import Lease, LeaseAttrs, parse_config
from overlay_core.backend import ExternalInterface, Node


def test_lease_has_no_backend_type_and_the_interface_mtu():
    iface = ExternalInterface("eth0", 2, 9000, IPv4Address("192.0.2.1"), None, IPv4Address("192.0.2.1"))
    backend = AllocBackend(Node(parse_config('{"Network":"10.5.0.0/16","Backend":{"Type":"alloc"}}'), iface,
                                SimpleNamespace()))
    request = backend.overlay_lease_request(backend.node)
    assert (request.backend_type, request.mtu, request.backend_data) == ("", 9000, None)
    lease = lambda t: Lease(IPv4Network("10.5.2.0/24"), None, LeaseAttrs(IPv4Address("192.0.2.2"), None, t))  # noqa: E731
    assert backend.accepts(lease("")) and not backend.accepts(lease("vxlan"))  # Flannel's alloc leases match
