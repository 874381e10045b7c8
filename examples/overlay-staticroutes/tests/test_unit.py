"""staticroutes' desired state without a kernel: advertised next hops, routes, skipped peers."""

from ipaddress import IPv4Address, IPv4Network, ip_network
from types import SimpleNamespace

import pytest
from overlay_core import ConfigError, Lease, LeaseAttrs, parse_config
from overlay_core.backend import ExternalInterface, Node
from overlay_core.dataplane import Route
from overlay_staticroutes import StaticRoutesBackend

# public IP 203.0.113.5 is a NAT address; the segment is 192.0.2.0/24
IFACE = ExternalInterface("eth0", 2, 1500, IPv4Address("192.0.2.1"), None, IPv4Address("203.0.113.5"), None,
                          (ip_network("192.0.2.0/24"),))


def backend(backend='{"Type": "staticroutes"}', network='"Network": "10.5.0.0/16"'):
    return StaticRoutesBackend(Node(parse_config('{%s, "Backend": %s}' % (network, backend)), IFACE,
                                    SimpleNamespace()))


def peer(subnet, data, public="198.51.100.9"):
    return Lease(IPv4Network(subnet), None, LeaseAttrs(IPv4Address(public), None, "staticroutes", data))


def test_a_node_advertises_its_interface_address_or_its_public_ip():
    assert backend().overlay_lease_request(SimpleNamespace(iface=IFACE)).backend_data == {"NextHop": "192.0.2.1"}
    public = backend('{"Type": "staticroutes", "NextHopFrom": "public"}')
    assert public.overlay_lease_request(SimpleNamespace(iface=IFACE)).backend_data == {"NextHop": "203.0.113.5"}


def test_routes_go_via_the_advertised_next_hop_not_the_public_ip():
    plan = backend().plan(peer("10.5.2.0/24", {"NextHop": "192.0.2.2"}))
    assert (plan.mode, plan.objects) == ("routed", (Route(IPv4Network("10.5.2.0/24"), IPv4Address("192.0.2.2"), 2),))


@pytest.mark.parametrize("data, reason", [
    (None, "its lease's BackendData has no IPv4 NextHop"),
    ({"NextHop": "not an address"}, "its lease's BackendData has no IPv4 NextHop"),
    ({"NextHop": "2001:db8::2"}, "its lease's BackendData has no IPv4 NextHop"),
    ({"NextHop": "198.51.100.2"}, "next hop 198.51.100.2 is not on eth0's segment"),
])
def test_peers_that_cannot_be_routed_are_skipped_with_the_reason(data, reason):
    plan = backend().plan(peer("10.5.2.0/24", data))
    assert (plan.mode, plan.objects, plan.reason) == ("skipped", (), reason)


class Memory:
    """A reconcile target kept in a dict (``overlay_core.reconcile.Target``), standing in for the kernel."""

    name = "memory"

    def __init__(self):
        self.objects = {}

    def accepts(self, obj):
        return True

    def owns(self, obj):
        return True

    async def dump(self):
        return list(self.objects.values())

    async def apply(self, to_set, to_delete):
        for obj in to_delete:
            self.objects.pop(obj.key, None)
        self.objects.update((obj.key, obj) for obj in to_set)
        return 0


@pytest.mark.trio
async def test_the_snapshot_and_peer_events_program_routes_and_status():
    b, memory = backend(), Memory()
    b.targets = lambda: [memory]
    routed, skipped = peer("10.5.2.0/24", {"NextHop": "192.0.2.2"}), peer("10.5.3.0/24", None)
    await b.overlay_store_in_sync([routed, skipped])
    assert [o.dst for o in memory.objects.values()] == [IPv4Network("10.5.2.0/24")]
    status = b.overlay_peer_status()
    assert status[routed.key].state == "programmed" and status[routed.key].detail["next_hop"] == "192.0.2.2"
    assert status[skipped.key].state == "skipped" and "NextHop" in status[skipped.key].detail["reason"]
    moved = peer("10.5.2.0/24", {"NextHop": "192.0.2.7"})
    await b.overlay_peers_changed([(routed, moved)])
    assert [o.gateway for o in memory.objects.values()] == [IPv4Address("192.0.2.7")]
    await b.overlay_peers_removed([moved])
    assert memory.objects == {}


def test_bad_configs_are_one_line_errors():
    with pytest.raises(ConfigError, match="staticroutes: NextHopFrom must be one of 'interface', 'public'"):
        backend('{"Type": "staticroutes", "NextHopFrom": "eth1"}')
    with pytest.raises(ConfigError, match="staticroutes routes IPv4 only"):
        backend(network='"Network": "10.5.0.0/16", "EnableIPv6": true, "IPv6Network": "2001:db8:10::/48"')
