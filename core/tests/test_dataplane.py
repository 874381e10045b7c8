"""Pure tests of the shared kernel machinery: ownership, diff, batch encoding, event filter."""

import struct
from ipaddress import IPv4Address, IPv4Network, IPv6Network

import pytest
from overlay_core.dataplane.kernel import batch_lines
from overlay_core.dataplane.monitor import RTM_DELLINK, RTM_DELNEIGH, RTM_DELROUTE, RTM_NEWLINK, messages, relevant
from overlay_core.dataplane.objects import FdbEntry, Neighbour, Route, Scope, ordered_for_set
from overlay_core.reconcile import diff

NET = IPv4Network("10.5.0.0/16")
R2 = Route(IPv4Network("10.5.2.0/24"), IPv4Address("10.5.2.0"), 5, True)
N2 = Neighbour(5, IPv4Address("10.5.2.0"), "aa:aa:aa:aa:aa:02")
F2 = FdbEntry(5, "aa:aa:aa:aa:aa:02", IPv4Address("192.0.2.2"))
SCOPE = Scope((NET, IPv6Network("2001:db8:10::/48")), (5,))


def test_scope_owns_only_our_network_and_devices():
    assert SCOPE.owns(R2) and SCOPE.owns(N2) and SCOPE.owns(F2)
    assert not SCOPE.owns(Route(IPv4Network("10.99.0.0/24"), None, 5))
    assert not SCOPE.owns(Neighbour(9, IPv4Address("10.5.2.0"), "aa:aa:aa:aa:aa:02"))


def test_diff_sets_missing_and_changed_and_deletes_unwanted_owned():
    stale = Route(IPv4Network("10.5.9.0/24"), IPv4Address("10.5.9.0"), 5, True)
    foreign = Route(IPv4Network("10.99.0.0/24"), None, 7)
    moved = FdbEntry(5, "aa:aa:aa:aa:aa:02", IPv4Address("192.0.2.99"))
    to_set, to_delete = diff([R2, N2, F2], [N2, moved, stale, foreign], SCOPE.owns)
    assert sorted(map(str, to_set)) == sorted(map(str, [R2, F2])) and to_delete == [stale]
    assert diff([R2, N2, F2], [R2, N2, F2], SCOPE.owns) == ([], [])
    assert [type(o).__name__ for o in ordered_for_set([R2, N2, F2])] == ["FdbEntry", "Neighbour", "Route"]


def test_batch_lines():
    ip_text, bridge_text = batch_lines([R2, N2, F2], [Route(IPv4Network("10.5.9.0/24"), None, 5)],
                                       {5: "flannel.1"})
    assert ip_text.splitlines() == [
        "route del 10.5.9.0/24 table main proto 79",
        "neigh replace 10.5.2.0 lladdr aa:aa:aa:aa:aa:02 dev flannel.1 nud permanent",
        "route replace 10.5.2.0/24 via 10.5.2.0 dev flannel.1 onlink scope global table main proto 79",
    ]
    assert bridge_text == "fdb replace aa:aa:aa:aa:aa:02 dev flannel.1 dst 192.0.2.2 self permanent"


def test_route_scope_defaults_as_ip_route_chooses_it():
    device_route = Route(IPv4Network("10.5.3.0/24"), None, 5)
    assert device_route.scope == "link" and str(device_route) == "route 10.5.3.0/24 dev #5 scope link"
    assert R2.scope == "global"
    assert Route(IPv4Network("10.5.4.0/24"), None, 0, type="unreachable").scope == "global"
    assert Route(IPv4Network("10.5.3.0/24"), None, 5, scope="global") != device_route  # drift is seen
    ip_text, _ = batch_lines([device_route], [], {5: "flannel-wg"})
    assert ip_text == "route replace 10.5.3.0/24 dev flannel-wg scope link table main proto 79"
    with pytest.raises(ValueError, match="scope 'universe' is not one of"):
        Route(IPv4Network("10.5.3.0/24"), None, 5, scope="universe")


def nl(kind, payload):
    return struct.pack("=IHHII", 16 + len(payload), kind, 0, 0, 0) + payload


def test_monitor_filter():
    route = lambda proto: struct.pack("=BBBBBBBBI", 2, 24, 0, 0, 254, proto, 0, 1, 0)  # noqa: E731
    neigh = lambda idx: struct.pack("=BBHiHBB", 2, 0, 0, idx, 0x80, 0, 0)  # noqa: E731
    link = lambda idx, flags: struct.pack("=BBHiII", 0, 0, 1, idx, flags, 0)  # noqa: E731
    data = nl(RTM_DELROUTE, route(79)) + nl(RTM_DELROUTE, route(4))
    assert [relevant(k, p, {5}) for k, p in messages(data)] == [True, False]
    assert relevant(RTM_DELNEIGH, neigh(5), {5}) and not relevant(RTM_DELNEIGH, neigh(6), {5})
    assert relevant(RTM_DELLINK, link(5, 1), {5}) and relevant(RTM_NEWLINK, link(5, 0), {5})
    assert not relevant(RTM_NEWLINK, link(5, 1), {5})


def test_route_types():
    fail = Route(IPv4Network("10.5.3.0/24"), None, 0, type="unreachable")
    ip_text, _ = batch_lines([fail], [Route(IPv4Network("10.5.4.0/24"), None, 0, type="blackhole")], {})
    assert ip_text.splitlines() == ["route del blackhole 10.5.4.0/24 table main proto 79",
                                    "route replace unreachable 10.5.3.0/24 table main proto 79"]
    assert str(fail) == "route unreachable 10.5.3.0/24" and fail.key == R2.key[:2] + (fail.dst,)
    assert fail != Route(IPv4Network("10.5.3.0/24"), None, 0)  # same key, another type: replaced
    with pytest.raises(ValueError, match="route type 'local'"):
        Route(IPv4Network("10.5.3.0/24"), None, 0, type="local")
