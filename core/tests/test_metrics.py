"""The agent's own text exposition against prometheus_client's, and the lean imports behind it."""

import subprocess
import sys

from overlay_core.metrics import Metrics, exposition


def test_exposition_matches_prometheus_client_without_created_series():
    from prometheus_client import generate_latest

    m = Metrics()
    m.ready.set(1)
    m.peer_events.labels(kind="added").inc(3)
    m.hook_errors.labels(hook="peers_added", plugin='odd "name"\\x\n').inc()
    m.batch_seconds.observe(0.003)
    m.batch_seconds.observe(7)
    m.watch_revision.set(123456789012)

    def without_created(text: str) -> list[str]:
        lines, skip = [], False
        for line in text.splitlines():
            if line.startswith("# HELP "):
                skip = line.split()[2].endswith("_created")
            if not skip:
                lines.append(line)
        return lines

    ours = exposition(m.registry).decode()
    assert "_created" not in ours
    assert 'plugin="odd \\"name\\"\\\\x\\n"' in ours
    assert ours.splitlines() == without_created(generate_latest(m.registry).decode())


def run_fresh(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout


def test_agent_imports_only_the_parts_of_pyroute2_and_prometheus_client_it_uses():
    out = run_fresh(
        "import sys, overlay_core.agent\n"
        "from overlay_core._lean import import_part\n"
        "import_part('pyroute2', 'iproute.linux')\n"
        "print(sorted(m for m in sys.modules if m.startswith(('pyroute2.ndb', 'pyroute2.ipdb', "
        "'prometheus_client.exposition', 'wsgiref'))))"
    )
    assert out.strip() == "[]"


def test_peer_status_collector_exports_states_and_numeric_detail_at_scrape_time():
    from overlay_core.backend import PeerStatus
    from overlay_core.metrics import CollectorRegistry, PeerStatusCollector, exposition

    statuses = {"10.5.2.0-24": PeerStatus("up", {"handshake_age_seconds": 12, "endpoint": "192.0.2.2:51820"}),
                "10.5.3.0-24": PeerStatus("stale", {"handshake_age_seconds": 200.5})}
    registry = CollectorRegistry()
    registry.register(PeerStatusCollector(lambda: statuses))
    text = exposition(registry).decode()
    assert 'overlay_peers_by_state{state="stale"} 1.0' in text
    assert 'overlay_peer_handshake_age_seconds{peer="10.5.3.0-24"} 200.5' in text
    assert "endpoint" not in text  # strings are for /readyz, not metrics
    statuses.pop("10.5.3.0-24")  # a peer that left is gone at the next scrape
    assert "10.5.3.0-24" not in exposition(registry).decode()
