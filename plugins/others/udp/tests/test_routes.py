"""routes.py: the immutable, masked-dict route table."""

from ipaddress import IPv4Address, IPv4Network

import pytest
from overlay_udp.routes import RouteTable


def pkt(dst: str) -> bytes:
    return bytes(16) + IPv4Address(dst).packed


def test_lookup_by_masked_destination():
    t = RouteTable({IPv4Network("10.5.2.0/24"): IPv4Address("192.0.2.2"),
                    IPv4Network("10.5.3.0/24"): IPv4Address("192.0.2.3")}, port=8285)
    assert t.lookup(pkt("10.5.2.77")) == ("192.0.2.2", 8285)
    assert t.lookup(pkt("10.5.3.0")) == ("192.0.2.3", 8285)
    assert t.lookup(pkt("10.5.3.255")) == ("192.0.2.3", 8285)
    assert t.lookup(pkt("10.5.4.1")) is None
    assert RouteTable().lookup(pkt("10.5.2.1")) is None


def test_updates_return_new_tables_and_leave_the_old_alone():
    t = RouteTable({IPv4Network("10.5.2.0/24"): IPv4Address("192.0.2.2")}, port=9000)
    changed = t.with_route(IPv4Network("10.5.2.0/24"), IPv4Address("192.0.2.9"))
    added = changed.with_route(IPv4Network("10.5.7.0/24"), IPv4Address("192.0.2.7"))
    removed = added.without_route(IPv4Network("10.5.2.0/24"))
    assert t.lookup(pkt("10.5.2.1")) == ("192.0.2.2", 9000)
    assert changed.lookup(pkt("10.5.2.1")) == ("192.0.2.9", 9000)
    assert added.lookup(pkt("10.5.7.1")) == ("192.0.2.7", 9000)
    assert removed.lookup(pkt("10.5.2.1")) is None and len(removed) == 1
    assert removed.without_route(IPv4Network("10.5.99.0/24")) == removed
    assert RouteTable.from_json(added.as_json(), 9000) == added


def test_mixed_prefix_lengths_are_refused():
    with pytest.raises(ValueError, match="one prefix length"):
        RouteTable({IPv4Network("10.5.2.0/24"): IPv4Address("192.0.2.2"),
                    IPv4Network("10.6.0.0/16"): IPv4Address("192.0.2.3")})



def test_with_changes_deletes_then_sets_and_refuses_a_second_prefix_length():
    t = RouteTable({IPv4Network("10.5.2.0/24"): IPv4Address("192.0.2.2"),
                    IPv4Network("10.5.3.0/24"): IPv4Address("192.0.2.3")}, port=9000)
    u = t.with_changes({"10.5.3.0/24": "192.0.2.9", IPv4Network("10.5.4.0/24"): "192.0.2.4"}, ["10.5.2.0/24"])
    assert u.as_json() == {"10.5.3.0/24": "192.0.2.9", "10.5.4.0/24": "192.0.2.4"}
    assert u.lookup(pkt("10.5.2.1")) is None and u.lookup(pkt("10.5.3.1")) == ("192.0.2.9", 9000)
    assert u == RouteTable.from_json(u.as_json(), 9000) and len(t) == 2  # the old table is untouched
    with pytest.raises(ValueError, match="one prefix length, got /16, /24"):
        t.with_changes({"10.6.0.0/16": "192.0.2.6"})
    emptied = t.with_changes(deletes=["10.5.2.0/24", "10.5.3.0/24"])
    assert len(emptied) == 0 and emptied.with_changes({"10.6.0.0/16": "192.0.2.6"}).prefixlen == 16
