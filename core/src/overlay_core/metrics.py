"""Prometheus metrics of one agent, in a registry of its own (served on ``/metrics``)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.ready = Gauge("overlay_ready", "1 when the node is ready (/readyz 200)", registry=r)
        self.etcd_connected = Gauge("overlay_etcd_connected", "1 while the etcd watch is up", registry=r)
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
            "Kernel objects set or deleted by a desired-vs-actual reconcile (drift repaired)",
            ["object", "action"], registry=r,
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
