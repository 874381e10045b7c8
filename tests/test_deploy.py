"""The example systemd unit, Kubernetes DaemonSet and Prometheus alert rules in deploy/ are valid
and name only what exists (flags, metrics)."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from overlay_core.backend import PeerStatus
from overlay_core.cli import RUN_FLAGS
from overlay_core.metrics import CollectorRegistry, Metrics, PeerStatusCollector
from overlay_core.services import Supervisor

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
FLANNELD_VARIABLES = {"FLANNELD_" + name.replace("-", "_").upper() for name, *_ in RUN_FLAGS}


def unit_settings(text: str) -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


def test_systemd_unit_is_a_notify_service_with_a_watchdog(tmp_path):
    text = (DEPLOY / "systemd" / "overlay.service").read_text()
    unit = unit_settings(text)
    assert unit["Type"] == ["notify"] and unit["WatchdogSec"] and unit["EnvironmentFile"]
    assert unit["KillMode"] == ["process"]  # helpers survive a restart; cleanup removes them
    assert {v.split("=")[0] for v in unit.get("Environment", [])} <= FLANNELD_VARIABLES
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed: parsed only")
    # verify wants an executable ExecStart; the unit's own directory must not hold other units
    overlay_core = shutil.which("overlay-core") or str(Path(__file__).parents[1] / ".venv/bin/overlay-core")
    (tmp_path / "overlay.service").write_text(text.replace("/usr/local/bin/overlay-core", overlay_core))
    out = subprocess.run(["systemd-analyze", "verify", str(tmp_path / "overlay.service")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "overlay.service" not in out.stderr + out.stdout, out.stderr


def test_daemonset_runs_one_host_network_agent_per_node_with_the_etcd_store():
    docs = list(yaml.safe_load_all((DEPLOY / "kubernetes" / "overlay-daemonset.yaml").read_text()))
    assert all({"apiVersion", "kind", "metadata"} <= doc.keys() for doc in docs)
    (ds,) = [doc for doc in docs if doc["kind"] == "DaemonSet"]
    assert ds["apiVersion"] == "apps/v1"
    spec = ds["spec"]
    assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()
    pod = spec["template"]["spec"]
    assert pod["hostNetwork"] is True
    (container,) = pod["containers"]
    assert container["command"][:2] == ["overlay-core", "run"]
    assert {"NET_ADMIN", "NET_RAW"} <= set(container["securityContext"]["capabilities"]["add"])
    env = {e["name"]: e for e in container["env"]}
    assert env.keys() <= FLANNELD_VARIABLES and "FLANNELD_ETCD_ENDPOINTS" in env
    port = int(env["FLANNELD_HEALTHZ_PORT"]["value"])
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": port}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": port}
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: volumes[m["name"]] for m in container["volumeMounts"]}
    assert mounts["/run/flannel"]["hostPath"]["path"] == "/run/flannel"  # subnet.env for the CNI plugin
    for doc in docs:
        if doc["metadata"].get("namespace"):
            assert doc["metadata"]["namespace"] == docs[0]["metadata"]["name"]


def exported_series(tmp_path) -> set[str]:
    """Every series name an agent can export: core metrics, helper metrics, and the per-peer
    gauges the WireGuard and IPsec backends' status columns become."""
    from overlay_ipsec.status import PeerSaStatus
    from overlay_wireguard.status import peer_report

    metrics = Metrics()
    Supervisor(tmp_path, tasks=None, registry=metrics.registry)  # type: ignore[arg-type]
    wireguard = peer_report("flannel-wg", _wireguard_peer(), now=100.0)
    statuses = {"a": PeerStatus(wireguard.state, wireguard.detail),
                "b": PeerStatus("established", PeerSaStatus("established", 1, 2, 30).detail())}
    peers = CollectorRegistry()
    peers.register(PeerStatusCollector(lambda: statuses))
    suffixes = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count")}
    return {family.name + suffix for registry in (metrics.registry, peers)
            for family in registry.collect() for suffix in suffixes[family.type]}


def _wireguard_peer():
    from ipaddress import ip_network
    from types import SimpleNamespace

    from overlay_wireguard.peer import PeerState

    peer = SimpleNamespace(endpoint="192.0.2.2:51820", allowed_ips=[ip_network("10.5.2.0/24")])
    return PeerState(peer, last_handshake=40.0, rx_bytes=1, tx_bytes=2)  # type: ignore[arg-type]


def test_alert_rules_name_only_metrics_the_agent_exports(tmp_path):
    rules = yaml.safe_load((DEPLOY / "prometheus" / "overlay-alerts.yaml").read_text())
    exported = exported_series(tmp_path)
    named = set()
    for group in rules["groups"]:
        for rule in group["rules"]:
            assert {"alert", "expr", "labels", "annotations"} <= rule.keys(), rule
            named |= set(re.findall(r"\boverlay_[a-z_]+", rule["expr"]))
    assert named and named <= exported, named - exported
    for needed in ("overlay_lease_expiry_timestamp_seconds", "overlay_lease_renewals_total", "overlay_etcd_connected",
                   "overlay_watch_lag_revisions", "overlay_watch_relists_total", "overlay_peer_state",
                   "overlay_reconcile_duration_seconds_bucket", "overlay_reconcile_changes_total",
                   "overlay_event_to_programmed_seconds_bucket", "overlay_helper_restarts_total",
                   "overlay_peer_handshake_age_seconds"):
        assert needed in named, f"no alert on {needed}"
