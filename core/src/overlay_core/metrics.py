"""Prometheus metrics of one agent, in a registry of its own, and their exposition.

prometheus_client's metric types and registry are used as they are, without its package
``__init__`` (see ``_lean``). The exposition is prometheus_client's own, negotiated on the
scraper's ``Accept`` header as its HTTP handler does: Prometheus asks for OpenMetrics, which
``prometheus_client.openmetrics.exposition`` writes at almost no memory cost; any other
client gets the classic text format from ``prometheus_client.exposition``, imported on the
first such scrape only because it pulls in http.server, wsgiref, urllib and gzip (about
1.7 MB of RSS the agent would otherwise carry for servers it never runs).
"""

from __future__ import annotations

from ._lean import import_part

_metrics, _registry, _core, _openmetrics = import_part(
    "prometheus_client", "metrics", "registry", "metrics_core", "openmetrics.exposition")
Counter, Gauge, Histogram = _metrics.Counter, _metrics.Gauge, _metrics.Histogram
CollectorRegistry = _registry.CollectorRegistry
GaugeMetricFamily = _core.GaugeMetricFamily

OPENMETRICS = "application/openmetrics-text"


def exposition(registry, accept: str = "") -> tuple[bytes, str]:
    """Every metric of ``registry`` and its content type, in the format ``accept`` asks for."""
    if any(part.split(";")[0].strip() == OPENMETRICS for part in accept.split(",")):
        return _openmetrics.generate_latest(registry), _openmetrics.CONTENT_TYPE_LATEST
    (text,) = import_part("prometheus_client", "exposition")
    encoder, content_type = text.choose_encoder(accept)
    return encoder(registry), content_type


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.ready = Gauge("overlay_ready", "1 when the node is ready (/readyz 200)", registry=r)
        self.etcd_connected = Gauge("overlay_etcd_connected", "1 while etcd answers (calls and watch)", registry=r)
        self.etcd_state_since = Gauge(
            "overlay_etcd_state_since_timestamp_seconds",
            "Unix time the etcd connection last changed between connected and disconnected", registry=r,
        )
        self.leases_rejected = Counter(
            "overlay_leases_rejected",
            "Peer leases refused because no network config could have handed them out, by reason",
            ["reason"], registry=r,
        )
        self.rejected_leases = Gauge("overlay_rejected_leases", "Peer leases currently refused", registry=r)
        self.config_valid = Gauge(
            "overlay_config_valid", "0 while the network config in the store is unusable or refused", registry=r,
        )
        self.peers = Gauge("overlay_peers", "Peer leases currently programmed", registry=r)
        self.watch_revision = Gauge("overlay_watch_revision", "Last etcd revision applied", registry=r)
        self.store_revision = Gauge(
            "overlay_store_revision", "Latest etcd revision seen in any answer from the store", registry=r,
        )
        self.watch_lag = Gauge(
            "overlay_watch_lag_revisions",
            "Store revisions seen but not yet applied to the peer set (latest seen minus last applied)",
            registry=r,
        )
        self.relists = Counter(
            "overlay_watch_relists", "Full re-lists after the watch fell behind compaction", registry=r
        )
        self.peer_events = Counter(
            "overlay_peer_events", "Peer changes delivered to hooks", ["kind"], registry=r
        )
        self.resync_seconds = Gauge(
            "overlay_last_resync_seconds",
            "Duration of the last full re-list: range read, diff, hooks and kernel reconcile",
            registry=r,
        )
        self.lease_expiry = Gauge(
            "overlay_lease_expiry_timestamp_seconds",
            "Unix time our lease expires (0 for a reservation)",
            registry=r,
        )
        self.renewals = Counter("overlay_lease_renewals", "Lease renewals", ["result"], registry=r)
        self.hook_errors = Counter(
            "overlay_hook_errors", "Hook implementations that raised", ["hook", "plugin"], registry=r
        )
        self.reconciles = Counter("overlay_reconcile_runs", "Periodic reconcile runs", registry=r)
        self.reconcile_seconds = Histogram(
            "overlay_reconcile_duration_seconds",
            "Time of one reconcile run: every plugin's desired-vs-actual check and repair",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10), registry=r,
        )
        self.repairs = Counter(
            "overlay_reconcile_changes",
            "Objects set or deleted by a desired-vs-actual reconcile (drift repaired), by target",
            ["target", "object", "action"], registry=r,
        )
        self.firewall_repairs = Counter(
            "overlay_firewall_repairs", "Firewall rule sets restored after drift", registry=r
        )
        self.batch_seconds = Histogram(
            "overlay_peer_batch_seconds",
            "Time to deliver one peer batch to every hook",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5),
            registry=r,
        )
        self.event_seconds = Histogram(
            "overlay_event_to_programmed_seconds",
            "From the agent receiving a watch response with peer changes (queueing included) to every hook having "
            "programmed them",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10), registry=r,
        )


def detail_metric_name(column: str) -> str:
    """The Prometheus name of a numeric detail column: ``overlay_peer_<column>``, with the short
    seconds suffix backends use in their columns spelt out as Prometheus wants base units named
    (WireGuard's ``handshake_age_s`` → ``overlay_peer_handshake_age_seconds``)."""
    if column.endswith("_s"):
        column = column[:-2] + "_seconds"
    return f"overlay_peer_{column}"


class PeerStatusCollector:
    """Per-peer state at scrape time, from the ``overlay_peer_status`` hook (no gauge child is
    kept per peer between scrapes): ``overlay_peers_by_state{state}``, ``overlay_peer_state{peer,state}``
    (1 for the state each peer is in: a WireGuard peer up/stale, an IPsec peer's SA established/
    connecting/down) and one gauge per numeric detail column (``detail_metric_name``: a WireGuard
    handshake age, an SA's bytes). Text columns stay in ``/readyz``."""

    def __init__(self, statuses) -> None:
        self.statuses = statuses  # () -> Mapping[str, PeerStatus]

    def describe(self):
        return []  # unknown until scraped: keeps registration from calling collect()

    def collect(self):
        statuses = self.statuses()
        by_state = GaugeMetricFamily("overlay_peers_by_state", "Peers by the state their backend reports",
                                     labels=["state"])
        per_peer = GaugeMetricFamily("overlay_peer_state", "1 for the state each peer's backend reports",
                                     labels=["peer", "state"])
        counts: dict[str, int] = {}
        fields: dict[str, list[tuple[str, float]]] = {}
        for key, status in sorted(statuses.items()):
            counts[status.state] = counts.get(status.state, 0) + 1
            per_peer.add_metric([key, status.state], 1)
            for name, value in status.detail.items():
                metric = detail_metric_name(name)
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    fields.setdefault(metric, []).append((key, float(value)))
        for state, count in sorted(counts.items()):
            by_state.add_metric([state], count)
        yield by_state
        yield per_peer
        for metric, samples in sorted(fields.items()):
            what = metric.removeprefix("overlay_peer_").replace("_", " ")
            family = GaugeMetricFamily(metric, f"Per-peer {what} as the backend reports it", labels=["peer"])
            for key, value in samples:
                family.add_metric([key], value)
            yield family
