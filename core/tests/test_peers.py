"""Pure tests of the peer set: snapshot diffs, de-duplication, coalescing, ordering."""

from collections import deque

from overlay_core.etcd import KV, WatchEvent
from overlay_core.peers import PeerBatch, PeerSet, _merge

P = "/coreos.com/network/subnets/"


def v(ip, mac="aa:aa:aa:aa:aa:aa"):
    return ('{"PublicIP":"%s","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VtepMAC":"%s"}}'
            % (ip, mac)).encode()


def apply(s: PeerSet, responses):
    """Apply watch responses without acting on own-key events (which are collected in order)."""
    events = deque(ev for _, evs in responses for ev in evs)
    batch, own_events = PeerBatch(), []
    while True:
        part, own = s.step(events)
        batch = _merge(batch, part)
        if own is None:
            break
        own_events.append(own)
    s.revision = max([s.revision] + [rev for rev, _ in responses])
    return batch, own_events


def test_snapshot_reports_added_and_own_key_separately():
    s = PeerSet(own_key="10.5.1.0-24")
    batch, own = s.reset(10, [KV(P + "10.5.1.0-24", v("192.0.2.1"), 5), KV(P + "10.5.2.0-24", v("192.0.2.2"), 6)])
    assert [p.key for p in batch.added] == ["10.5.2.0-24"] and not batch.removed
    assert own.lease is not None and own.lease.key == "10.5.1.0-24"
    assert s.revision == 10


def test_resync_diff_reports_removed_changed_and_ignores_unchanged():
    s = PeerSet()
    s.reset(10, [KV(P + "10.5.2.0-24", v("192.0.2.2"), 6), KV(P + "10.5.3.0-24", v("192.0.2.3"), 7)])
    batch, _ = s.reset(20, [KV(P + "10.5.2.0-24", v("192.0.2.2"), 15),  # renewed, same data
                            KV(P + "10.5.4.0-24", v("192.0.2.4"), 16)])
    assert [p.key for p in batch.removed] == ["10.5.3.0-24"]
    assert [p.key for p in batch.added] == ["10.5.4.0-24"] and not batch.changed
    batch, _ = s.reset(30, [KV(P + "10.5.2.0-24", v("192.0.2.2", "bb:bb:bb:bb:bb:bb"), 25),
                            KV(P + "10.5.4.0-24", v("192.0.2.4"), 16)])
    assert [(o.attrs.backend_data, n.attrs.backend_data) for o, n in batch.changed] == [
        ({"VtepMAC": "aa:aa:aa:aa:aa:aa"}, {"VtepMAC": "bb:bb:bb:bb:bb:bb"})]


def test_malformed_key_or_value_never_empties_the_set():
    s = PeerSet()
    s.reset(10, [KV(P + "10.5.2.0-24", v("192.0.2.2"), 6)])
    batch, _ = s.reset(11, [KV(P + "10.5.2.0-24", v("192.0.2.2"), 6), KV(P + "garbage", b"{}", 11)])
    assert not batch and len(s.peers) == 1
    batch, _ = apply(s, [(12, [WatchEvent(P + "10.5.2.0-24", b"not json", 12),
                              WatchEvent(P + "nonsense-key", v("192.0.2.9"), 12)])])
    assert not batch and s.peers["10.5.2.0-24"].attrs.public_ip.exploded == "192.0.2.2"


def test_renewal_with_same_data_is_no_event_but_updates_revision():
    s = PeerSet()
    s.reset(10, [KV(P + "10.5.2.0-24", v("192.0.2.2"), 6)])
    batch, _ = apply(s, [(11, [WatchEvent(P + "10.5.2.0-24", v("192.0.2.2"), 11, 77)])])
    assert not batch and s.peers["10.5.2.0-24"].revision == 11


def test_changes_to_one_key_within_a_batch_are_coalesced():
    s = PeerSet()
    s.reset(10, [])
    batch, _ = apply(s, [
        (11, [WatchEvent(P + "10.5.2.0-24", v("192.0.2.2"), 11)]),
        (12, [WatchEvent(P + "10.5.2.0-24", v("192.0.2.2", "bb:bb:bb:bb:bb:bb"), 12)]),
        (13, [WatchEvent(P + "10.5.3.0-24", v("192.0.2.3"), 13)]),
        (14, [WatchEvent(P + "10.5.3.0-24", None, 14)]),
    ])
    assert [p.attrs.backend_data["VtepMAC"] for p in batch.added] == ["bb:bb:bb:bb:bb:bb"]
    assert not batch.removed and not batch.changed and s.revision == 14


def test_revisions_only_go_forward():
    s = PeerSet()
    s.reset(20, [KV(P + "10.5.2.0-24", v("192.0.2.2"), 20)])
    batch, _ = apply(s, [(21, [WatchEvent(P + "10.5.2.0-24", v("192.0.2.99"), 15),
                              WatchEvent(P + "10.5.2.0-24", None, 19)])])
    assert not batch and "10.5.2.0-24" in s.peers


def test_delete_of_unknown_key_and_own_key_events():
    s = PeerSet(own_key="10.5.1.0-24")
    s.reset(10, [])
    batch, own = apply(s, [(11, [WatchEvent(P + "10.5.9.0-24", None, 11),
                                WatchEvent(P + "10.5.1.0-24", None, 11)])])
    assert not batch and len(own) == 1 and own[0].lease is None


def test_resync_keeps_the_decoded_lease_of_an_unchanged_key():
    s = PeerSet()
    s.reset(10, [KV(P + "10.5.2.0-24", v("192.0.2.2"), 6, 7), KV(P + "10.5.3.0-24", v("192.0.2.3"), 8, 7)])
    kept, renewed = s.peers["10.5.2.0-24"], s.peers["10.5.3.0-24"]
    # a value we would fail to parse proves the unchanged key is not decoded again
    batch, _ = s.reset(20, [KV(P + "10.5.2.0-24", b"never parsed", 6, 7), KV(P + "10.5.3.0-24", v("192.0.2.3"), 9, 7)])
    assert not batch
    assert s.peers["10.5.2.0-24"] is kept
    assert s.peers["10.5.3.0-24"] is not renewed and s.peers["10.5.3.0-24"].revision == 9
