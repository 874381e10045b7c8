"""Metric names, prometheus_client's exposition negotiated on Accept, and the lean imports behind it."""

import subprocess
import sys

import pytest
from overlay_core.health import HealthServer
from overlay_core.metrics import Metrics, exposition

OPENMETRICS_ACCEPT = ("application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
                      "text/plain;version=0.0.4;q=0.5,*/*;q=0.1")  # what Prometheus 2.x sends


def sample_metrics() -> Metrics:
    m = Metrics()
    m.ready.set(1)
    m.peer_events.labels(kind="added").inc(3)
    m.hook_errors.labels(hook="peers_added", plugin='odd "name"\\x\n').inc()
    m.batch_seconds.observe(0.003)
    m.event_seconds.observe(0.02)
    m.watch_revision.set(123456789012)
    return m


def test_prometheus_scrapes_get_openmetrics_from_prometheus_client():
    from prometheus_client.openmetrics.exposition import generate_latest
    from prometheus_client.openmetrics.parser import text_string_to_metric_families

    m = sample_metrics()
    body, content_type = exposition(m.registry, OPENMETRICS_ACCEPT)
    assert content_type.startswith("application/openmetrics-text; version=1.0.0")
    assert body.endswith(b"# EOF\n")
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}  # the reference parser accepts it
    assert families["overlay_peer_events"].type == "counter"
    assert families["overlay_event_to_programmed_seconds"].type == "histogram"
    strip = [line for line in body.decode().splitlines() if "_created" not in line]
    assert strip == [line for line in generate_latest(m.registry).decode().splitlines() if "_created" not in line]


def test_other_clients_get_the_classic_text_format():
    from prometheus_client.exposition import generate_latest

    m = sample_metrics()
    body, content_type = exposition(m.registry, "*/*")
    assert content_type == "text/plain; version=0.0.4; charset=utf-8"
    assert body == generate_latest(m.registry)
    assert 'plugin="odd \\"name\\"\\\\x\\n"' in body.decode()
    assert exposition(m.registry)[1] == content_type  # no Accept header at all


@pytest.mark.parametrize("accept, kind", [(OPENMETRICS_ACCEPT, b"application/openmetrics-text"),
                                          ("", b"text/plain")])
def test_health_server_negotiates_on_the_accept_header(accept, kind):
    server = HealthServer(lambda: (True, {}), sample_metrics().registry)
    head, _, body = server.answer("/metrics", accept).partition(b"\r\n\r\n")
    assert b"Content-Type: " + kind in head and b"overlay_ready" in body


# Prometheus names of what an operator alerts on (issue 17); README and deploy/prometheus use these.
OPERATOR_METRICS = {
    "overlay_lease_expiry_timestamp_seconds": "gauge", "overlay_lease_renewals": "counter",
    "overlay_etcd_connected": "gauge", "overlay_watch_lag_revisions": "gauge", "overlay_store_revision": "gauge",
    "overlay_watch_relists": "counter", "overlay_reconcile_duration_seconds": "histogram",
    "overlay_reconcile_changes": "counter", "overlay_event_to_programmed_seconds": "histogram",
    "overlay_firewall_repairs": "counter", "overlay_ready": "gauge", "overlay_config_valid": "gauge",
}


def test_operator_metrics_exist_with_their_types():
    families = {f.name: f.type for f in Metrics().registry.collect()}
    assert {name: families.get(name) for name in OPERATOR_METRICS} == OPERATOR_METRICS


def run_fresh(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout


def test_agent_imports_only_the_parts_of_pyroute2_and_prometheus_client_it_uses():
    out = run_fresh(
        "import sys, overlay_core.agent\n"
        "from overlay_core.metrics import Metrics, exposition\n"
        "from overlay_core._lean import import_part\n"
        "import_part('pyroute2', 'iproute.linux')\n"
        f"exposition(Metrics().registry, {OPENMETRICS_ACCEPT!r})\n"
        "print(sorted(m for m in sys.modules if m.startswith(('pyroute2.ndb', 'pyroute2.ipdb', "
        "'prometheus_client.exposition', 'wsgiref', 'http.server', 'gzip'))))"
    )
    assert out.strip() == "[]"


def test_peer_status_collector_exports_states_and_numeric_detail_at_scrape_time():
    from overlay_core.backend import PeerStatus
    from overlay_core.metrics import CollectorRegistry, PeerStatusCollector

    statuses = {"10.5.2.0-24": PeerStatus("up", {"handshake_age_s": 12, "endpoint": "192.0.2.2:51820"}),
                "10.5.3.0-24": PeerStatus("stale", {"handshake_age_s": 200.5, "rx_bytes": 7, "sa": "down"})}
    registry = CollectorRegistry()
    registry.register(PeerStatusCollector(lambda: statuses))
    text = exposition(registry)[0].decode()
    assert 'overlay_peers_by_state{state="stale"} 1.0' in text
    assert 'overlay_peer_state{peer="10.5.3.0-24",state="stale"} 1.0' in text
    assert 'overlay_peer_handshake_age_seconds{peer="10.5.3.0-24"} 200.5' in text  # "_s" spelt out
    assert 'overlay_peer_rx_bytes{peer="10.5.3.0-24"} 7.0' in text
    assert "endpoint" not in text and "sa=" not in text  # strings are for /readyz, not metrics
    statuses.pop("10.5.3.0-24")  # a peer that left is gone at the next scrape
    assert "10.5.3.0-24" not in exposition(registry)[0].decode()
