"""Per-peer status: handshake age, counters, stale after three minutes, no secrets."""

import json

from overlay_core.services import Secret
from overlay_wireguard.keys import KeyPair
from overlay_wireguard.peer import PeerState, WgPeer, allowed_ips
from overlay_wireguard.status import peer_report


def test_states_and_detail():
    psk = bytes(range(32))
    peer = WgPeer(KeyPair.generate().public, "192.0.2.2:51820", allowed_ips(["10.5.2.0/24"]), Secret(psk))
    assert peer_report("flannel-wg", PeerState(peer), 1000.0).state == "programmed"
    up = peer_report("flannel-wg", PeerState(peer, 900.0, 10, 20), 1000.0)
    assert up.state == "up" and up.detail == {"device": "flannel-wg", "endpoint": "192.0.2.2:51820",
                                              "allowed_ips": ["10.5.2.0/24"], "handshake_age_s": 100.0,
                                              "rx_bytes": 10, "tx_bytes": 20}
    stale = peer_report("flannel-wg", PeerState(peer, 700.0), 1000.0)
    assert stale.state == "stale" and stale.detail["handshake_age_s"] == 300.0
    text = json.dumps(stale.detail)
    assert psk.hex() not in text and "***" not in text
