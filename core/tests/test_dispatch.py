"""The dispatcher: what reaches the backend's hooks when leases are rejected, conflict, or
stop conflicting; metrics and /readyz facts."""

from ipaddress import IPv4Network

from overlay_core.config import parse_config
from overlay_core.dispatch import PeerDispatcher
from overlay_core.lease import lease_from_kv
from overlay_core.metrics import Metrics
from overlay_core.peers import PeerBatch
from overlay_core.validity import LeaseRules

CONFIG = parse_config('{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"2001:db8:10::/48"}')


def lease(key, revision, ip="192.0.2.7", btype="vxlan"):
    return lease_from_kv(key, f'{{"PublicIP":"{ip}","BackendType":"{btype}"}}', revision, 1)


def make(own=("10.5.1.0/24",)):
    metrics = Metrics()
    rules = LeaseRules(CONFIG, tuple(IPv4Network(n) for n in own))
    return PeerDispatcher(rules, lambda lease: lease.attrs.backend_type == "vxlan", None, None, metrics), metrics


def keys(batch):
    return ([p.key for p in batch.added], [n.key for _, n in batch.changed], [p.key for p in batch.removed])


def test_rejected_leases_never_reach_the_backend_and_are_reported_once():
    d, metrics = make()
    out = d.translate(PeerBatch(added=[lease("10.5.2.0-24", 3), lease("192.0.2.0-24", 4), lease("10.5.0.0-16", 5)]))
    assert keys(out) == (["10.5.2.0-24"], [], [])
    assert set(d.report()) == {"192.0.2.0-24", "10.5.0.0-16"}
    d.translate(PeerBatch(changed=[(lease("192.0.2.0-24", 4), lease("192.0.2.0-24", 6))]))  # same reason
    assert metrics.leases_rejected.labels("outside-network")._value.get() == 1
    assert metrics.rejected_leases._value.get() == 2
    d.translate(PeerBatch(removed=[lease("192.0.2.0-24", 6)]))
    assert set(d.report()) == {"10.5.0.0-16"}


def test_two_leases_for_one_subnet_the_older_keeps_it_until_it_leaves():
    d, _ = make()
    older, newer = lease("10.5.2.0-24", 3), lease("10.5.2.0-24&2001:db8:10:2::-64", 9)
    out = d.translate(PeerBatch(added=[newer, older]))
    assert keys(out) == (["10.5.2.0-24"], [], [])
    assert "already the subnet of lease 10.5.2.0-24" in d.report()[newer.key]
    out = d.translate(PeerBatch(removed=[older]))
    assert keys(out) == ([newer.key], [], ["10.5.2.0-24"]) and not d.report()


def test_a_lease_that_turns_bad_is_removed_and_one_that_turns_good_is_added():
    d, _ = make()
    good = lease("10.5.2.0-24", 3)
    d.translate(PeerBatch(added=[good]))
    bad = lease("10.5.2.0-24", 4, ip="10.5.9.9")
    assert keys(d.translate(PeerBatch(changed=[(good, bad)]))) == ([], [], ["10.5.2.0-24"])
    fixed = lease("10.5.2.0-24", 5)
    assert keys(d.translate(PeerBatch(changed=[(bad, fixed)]))) == (["10.5.2.0-24"], [], [])


def test_our_subnet_moving_judges_every_lease_again():
    d, _ = make(own=("10.5.1.0/24",))
    d.translate(PeerBatch(added=[lease("10.5.1.0-24", 3), lease("10.5.3.0-24", 4)]))
    assert list(d.accepted) == ["10.5.3.0-24"]
    out = d.rules_changed(LeaseRules(CONFIG, (IPv4Network("10.5.3.0/24"),)))
    assert keys(out) == (["10.5.1.0-24"], [], ["10.5.3.0-24"])
    assert list(d.report()) == ["10.5.3.0-24"]


def test_other_backend_types_are_ignored_not_rejected():
    d, metrics = make()
    out = d.translate(PeerBatch(added=[lease("10.5.2.0-24", 3, btype="host-gw")]))
    assert keys(out) == ([], [], []) and not d.report()
    assert metrics.rejected_leases._value.get() == 0
