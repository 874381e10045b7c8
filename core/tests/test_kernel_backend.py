"""The shared KernelBackend logic with a recording kernel: incremental updates, snapshot
diffing, plan memoisation and decision logging."""

from ipaddress import IPv4Address, IPv4Network
from types import SimpleNamespace

from overlay_core import KernelBackend, Lease, LeaseAttrs, PeerPlan, parse_config
from overlay_core.backend import ExternalInterface, Node
from overlay_core.dataplane.objects import Route
from overlay_core.testing.fakes import RecordingTarget


class Toy(KernelBackend):
    type = "toy"

    def __init__(self, node):
        super().__init__(node)
        self.kernel = RecordingTarget("kernel")
        self.plans = 0

    def targets(self):
        return [self.kernel]

    def plan(self, peer):
        self.plans += 1
        via = peer.attrs.public_ip
        return PeerPlan("toy", (Route(peer.subnet, via, 2),))


def node():
    iface = ExternalInterface("eth0", 2, 1500, IPv4Address("192.0.2.1"), None, IPv4Address("192.0.2.1"))
    return Node(parse_config('{"Network":"10.5.0.0/16","Backend":{"Type":"toy"}}'), iface, SimpleNamespace())


def lease(n, ip=None):
    return Lease(IPv4Network(f"10.5.{n}.0/24"), None, LeaseAttrs(IPv4Address(ip or f"192.0.2.{n}"), None, "toy"))


async def test_first_snapshot_is_one_diff_then_events_are_incremental():
    b = Toy(node())
    peers = [lease(2), lease(3)]
    await b.overlay_peers_added(peers)  # initial snapshot: left to the diff below
    assert b.kernel.applied == []
    await b.overlay_store_in_sync(peers)
    assert len(b.kernel.applied) == 1  # one converge, one apply
    assert sorted(str(o.dst) for o in b.kernel.state.values()) == ["10.5.2.0/24", "10.5.3.0/24"]
    b.kernel.state.pop(next(iter(b.kernel.state)))  # drift: someone deleted a route
    await b.overlay_reconcile(peers)
    assert len(b.kernel.state) == 2 and len(b.kernel.applied[-1][0]) == 1
    await b.overlay_peers_added([lease(4)])
    assert b.kernel.applied[-1] == ([Route(IPv4Network("10.5.4.0/24"), IPv4Address("192.0.2.4"), 2)], [])
    await b.overlay_peers_changed([(lease(4), lease(4, "192.0.2.44"))])
    new = Route(IPv4Network("10.5.4.0/24"), IPv4Address("192.0.2.44"), 2)
    assert b.kernel.applied[-1] == ([new], [])  # same key: replaced in place, nothing deleted
    await b.overlay_peers_removed([lease(4, "192.0.2.44")])
    assert b.kernel.applied[-1] == ([], [new])
    assert b.overlay_report() == {"peer_modes": {"toy": 2}}


async def test_plans_are_memoised_until_the_peer_or_devices_change():
    b = Toy(node())
    peers = [lease(n) for n in range(2, 12)]
    await b.overlay_store_in_sync(peers)
    await b.overlay_reconcile(peers)
    assert b.plans == 10  # the reconcile reused every plan
    await b.overlay_reconcile([lease(2, "192.0.2.99"), *peers[1:]])
    assert b.plans == 11
    b.node.owned_links.add(9)  # a device appeared or was recreated: plan again
    await b.overlay_reconcile(peers)
    assert b.plans == 21


async def test_decisions_are_logged_once_and_summarised(caplog):
    caplog.set_level("INFO", logger="overlay.peers")
    b = Toy(node())
    peers = [lease(n) for n in range(2, 40)]
    await b.overlay_store_in_sync(peers)
    await b.overlay_reconcile(peers)
    lines = [r.getMessage() for r in caplog.records if r.name == "overlay.peers"]
    assert sum(line.endswith(": toy") for line in lines) == 10
    assert "and 28 more peers: toy 28" in lines


async def test_peer_status_reports_each_peer_and_why_it_is_skipped():
    class Picky(Toy):
        def plan(self, peer):
            if peer.attrs.public_ip == IPv4Address("192.0.2.3"):
                return PeerPlan("skipped", (), "not on our segment")
            return super().plan(peer)

    b = Picky(node())
    await b.overlay_store_in_sync([lease(2), lease(3)])
    status = b.overlay_peer_status()
    assert status["10.5.2.0-24"].state == "programmed" and status["10.5.2.0-24"].detail == {"mode": "toy"}
    assert status["10.5.3.0-24"].state == "skipped" and status["10.5.3.0-24"].detail["reason"] == "not on our segment"
