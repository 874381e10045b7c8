"""datapath.Counters: per-peer rows, bounded."""

from overlay_udp.datapath import MAX_PEERS, Counters


def test_peer_counters_are_bounded():
    c = Counters()
    for i in range(MAX_PEERS + 10):
        c.peer(f"198.51.{i >> 8}.{i & 255}")[0] += 1
    snap = c.snapshot()["peers"]
    assert len(snap) == MAX_PEERS + 1 and snap["other"]["tx_packets"] == 10
