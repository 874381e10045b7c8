"""Service integration of a real agent in a lab namespace: systemd notifications through a real
NOTIFY_SOCKET (READY=1, WATCHDOG=1 pings, STOPPING=1), ``--log-format json`` with the startup
line, and the operator metrics scraped the way Prometheus does after an injected drift."""

import json
import socket
import time

import pytest
from overlay_core import __version__
from overlay_core.metrics import OPENMETRICS
from overlay_core.testing.netns import netns_socket
from overlay_lab.lab import HEALTH_PORT

from .helpers import ip, metric, owned_routes, vxlan_lease, wait_until

pytestmark = [pytest.mark.netns, pytest.mark.etcd]

PROMETHEUS_ACCEPT = f"{OPENMETRICS};version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"


def received(server: socket.socket) -> list[bytes]:
    out = []
    while True:
        try:
            out.append(server.recv(256))
        except BlockingIOError:
            return out


def test_systemd_notifications_and_json_logs(lab, tmp_path):
    lab.up(nodes=1, backend="alloc", start_agents=False)
    node = lab.node(1)
    address = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(address)
        server.setblocking(False)
        lab.start_agent(node, "--log-format=json", env={"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "1000000"})
        lab.wait_ready([node])
        messages: list[bytes] = []
        wait_until(lambda: messages.extend(received(server)) or messages.count(b"WATCHDOG=1") >= 3, timeout=30,
                   what="watchdog pings every half second")
        assert messages.count(b"READY=1") == 1 and b"STOPPING=1" not in messages
        assert lab.stop_agent(node, timeout=15) == 0
        messages += received(server)
    assert messages[-1] == b"STOPPING=1"
    entries = [json.loads(line) for line in open(node.log) if line.strip()]  # every line one JSON object
    assert entries and all(e.keys() >= {"time", "level", "logger", "message"} for e in entries)
    public_ip = lab.readyz(node)[1].get("public_ip") or node.ip
    startup = [e["message"] for e in entries if e["message"].startswith(f"overlay-core {__version__}: backend")]
    assert len(startup) == 1 and "backend alloc" in startup[0] and lab.etcd_endpoints in startup[0]
    assert f"node {public_ip} on eth0" in startup[0]


def scrape(node) -> tuple[str, str]:
    """``/metrics`` as Prometheus asks for it: (content type, body)."""
    sock = netns_socket(node.ns)
    with sock:
        sock.settimeout(5)
        sock.connect(("127.0.0.1", HEALTH_PORT))
        sock.sendall(f"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: {PROMETHEUS_ACCEPT}\r\n"
                     "Connection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.decode().partition("\r\n\r\n")
    ctype = next(line.split(":", 1)[1].strip() for line in head.splitlines() if line.lower().startswith("content-type"))
    return ctype, body


def test_operator_metrics_after_a_peer_event_and_an_injected_drift(lab):
    from prometheus_client.openmetrics.parser import text_string_to_metric_families

    lab.up(nodes=2, backend="vxlan")
    node, peer = lab.node(1), lab.node(2)
    peer_subnet = lab.readyz(peer)[1]["subnet"]
    # a peer event after start (not the snapshot): a lease written now, for an address nobody uses
    lab.etcdctl("put", "/coreos.com/network/subnets/10.5.200.0-24", vxlan_lease("192.0.2.200"))
    wait_until(lambda: "10.5.200.0/24" in owned_routes(node), what="the new peer programmed")
    wait_until(lambda: metric(node, "overlay_event_to_programmed_seconds_count") >= 1, what="latency observed")
    before = metric(node, "overlay_reconcile_changes_total")
    ip("route", "del", peer_subnet, ns=node.ns)  # drift: somebody removes our route to the peer
    wait_until(lambda: peer_subnet in owned_routes(node), what="route repaired")
    wait_until(lambda: metric(node, "overlay_reconcile_changes_total") > before, what="repair counted")
    ctype, body = scrape(node)
    assert ctype.startswith(OPENMETRICS)
    families = {f.name: f for f in text_string_to_metric_families(body)}
    values = {f.name: {tuple(sorted(s.labels.items())): s.value for s in f.samples
                       if s.name in (f.name, f.name + "_total")} for f in families.values()}
    assert values["overlay_etcd_connected"] == {(): 1.0} and values["overlay_ready"] == {(): 1.0}
    assert values["overlay_watch_lag_revisions"] == {(): 0.0}
    assert values["overlay_store_revision"][()] >= 1
    assert values["overlay_lease_expiry_timestamp_seconds"][()] > time.time()
    assert values["overlay_peers_by_state"] and "overlay_watch_relists" in families
    assert any(dict(labels).get("object") == "route" and dict(labels)["action"] == "set"
               for labels in values["overlay_reconcile_changes"]), values["overlay_reconcile_changes"]
    assert families["overlay_reconcile_duration_seconds"].type == "histogram"
    readyz = lab.readyz(node)[1]["store"]
    assert readyz["watch_lag"] == 0 and readyz["applied_revision"] == readyz["revision"] > 0
