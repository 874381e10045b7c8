"""/readyz: probes get the facts and per-state counts, ``?verbose`` adds every peer; the per-peer
walk is reused for a second so a tight probe loop costs the agent nothing per request."""

import json

from overlay_core.backend import PeerStatus
from overlay_core.health import HealthServer
from overlay_core.metrics import CollectorRegistry
from overlay_core.readiness import PeerStatusView


def test_peer_status_view_rebuilds_at_most_once_per_max_age():
    now = [100.0]
    calls = []

    def statuses():
        calls.append(now[0])
        return {"b": PeerStatus("programmed", {"mode": "direct"}), "a": PeerStatus("up", {})}

    view = PeerStatusView(max_age=1.0, clock=lambda: now[0])
    first = view.get(statuses)
    assert list(first) == ["a", "b"] and first["b"] == {"state": "programmed", "mode": "direct"}
    assert view.counts == {"programmed": 1, "up": 1}
    now[0] += 0.5
    assert view.get(statuses) is first and calls == [100.0]
    now[0] += 0.5
    view.get(statuses)
    assert calls == [100.0, 101.0]
    view.get(statuses, fresh=True)  # /readyz?verbose: always current
    assert calls == [100.0, 101.0, 101.0]


def test_readyz_answers_verbose_only_when_asked():
    asked = []

    def report(verbose):
        asked.append(verbose)
        return verbose, {"peer_states": {"up": 1}, **({"peer_status": {"a": {"state": "up"}}} if verbose else {})}

    server = HealthServer(report, CollectorRegistry())
    plain = server.answer("/readyz")
    assert plain.startswith(b"HTTP/1.1 503") and b"peer_status" not in plain
    full = server.answer("/readyz?verbose")
    head, body = full.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200") and json.loads(body)["peer_status"] == {"a": {"state": "up"}}
    assert server.answer("/readyz?x=1&verbose").startswith(b"HTTP/1.1 200")
    assert asked == [False, True, True]
    assert server.answer("/nope?verbose").startswith(b"HTTP/1.1 404")
