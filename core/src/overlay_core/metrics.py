"""Prometheus metrics of one agent, in a registry of its own, and their text exposition.

prometheus_client's metric types and registry are used as they are; only its ``__init__``
and ``exposition`` module are skipped (they pull in http.server, wsgiref, urllib.request and
gzip for servers we do not run): ``exposition()`` below writes the text format itself.
"""

from __future__ import annotations

from ._lean import import_part

_metrics, _registry, _utils, _core = import_part("prometheus_client", "metrics", "registry", "utils", "metrics_core")
Counter, Gauge, Histogram = _metrics.Counter, _metrics.Gauge, _metrics.Histogram
CollectorRegistry = _registry.CollectorRegistry
GaugeMetricFamily = _core.GaugeMetricFamily

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# the text format's names for the OpenMetrics types our metrics have
_TEXT_SUFFIX = {"counter": "_total", "gauge": "", "histogram": ""}


def _escape(text: str, quote: bool = False) -> str:
    text = text.replace("\\", r"\\").replace("\n", r"\n")
    return text.replace('"', r'\"') if quote else text


def exposition(registry) -> bytes:
    """Every metric of ``registry`` in Prometheus' text format 0.0.4, labels sorted.

    ``_created`` samples (an OpenMetrics notion, creation time of each series) are left out.
    """
    lines = []
    for family in registry.collect():
        name = family.name + _TEXT_SUFFIX[family.type]
        lines.append(f"# HELP {name} {_escape(family.documentation)}\n# TYPE {name} {family.type}\n")
        for sample in family.samples:
            if sample.name == family.name + "_created":
                continue
            labels = ",".join(f'{k}="{_escape(v, quote=True)}"' for k, v in sorted(sample.labels.items()))
            labels = "{%s}" % labels if labels else ""
            lines.append(f"{sample.name}{labels} {_utils.floatToGoString(sample.value)}\n")
    return "".join(lines).encode()


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


class PeerStatusCollector:
    """Per-peer state at scrape time, from the ``overlay_peer_status`` hook (no gauge child is
    kept per peer between scrapes): ``overlay_peers_by_state{state}``, and one gauge
    ``overlay_peer_<field>{peer}`` for every numeric field of the peers' detail (a WireGuard
    handshake age, an SA's bytes)."""

    def __init__(self, statuses) -> None:
        self.statuses = statuses  # () -> Mapping[str, PeerStatus]

    def describe(self):
        return []  # unknown until scraped: keeps registration from calling collect()

    def collect(self):
        statuses = self.statuses()
        by_state = GaugeMetricFamily("overlay_peers_by_state", "Peers by the state their backend reports",
                                     labels=["state"])
        counts: dict[str, int] = {}
        fields: dict[str, list[tuple[str, float]]] = {}
        for key, status in statuses.items():
            counts[status.state] = counts.get(status.state, 0) + 1
            for name, value in status.detail.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    fields.setdefault(name, []).append((key, float(value)))
        for state, count in sorted(counts.items()):
            by_state.add_metric([state], count)
        yield by_state
        for name, samples in sorted(fields.items()):
            family = GaugeMetricFamily(f"overlay_peer_{name}", f"Per-peer {name.replace('_', ' ')} "
                                       "as the backend reports it", labels=["peer"])
            for key, value in samples:
                family.add_metric([key], value)
            yield family
