"""Shared helpers of the end-to-end tests."""

import base64
import json
import subprocess
import time
from contextlib import contextmanager

from overlay_core.testing.netns import http_get, ip, kernel_supports, nsexec  # noqa: F401 (re-exported for tests)
from overlay_lab.lab import HEALTH_PORT, PREFIX
from overlay_lab.traffic import add_pods, ping_matrix


def wait_until(predicate, timeout=20.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@contextmanager
def no_ping_lost(src_ns: str, dst_ip: str, count: int):
    """``count`` pings at 20 ms from ``src_ns`` to ``dst_ip`` across the with-block (the first
    0.5 s before it); leaving waits for the last one and asserts that every one was answered."""
    pinger = subprocess.Popen(["ip", "netns", "exec", src_ns, "ping", "-n", "-q", "-i", "0.02", "-c", str(count),
                               dst_ip], stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(0.5)
        yield
        out, _ = pinger.communicate(timeout=60)
    finally:
        pinger.kill()
        pinger.wait()
    assert f"{count} packets transmitted, {count} received, 0% packet loss" in out, out


def up_with_pods(lab, **kw):
    rows = lab.up(**kw)
    assert all(r["ready"] for r in rows)
    for node in lab.state.nodes:
        add_pods(lab, node, 1)
    return rows


def all_pings_ok(lab):
    matrix = ping_matrix(lab, count=2)
    assert matrix and all(sent == got > 0 for sent, got in matrix.values()), matrix
    return matrix


def owned_routes(node) -> str:
    return ip("route", "show", "proto", "79", ns=node.ns) + ip("-6", "route", "show", "proto", "79", ns=node.ns)


def lease_revisions(lab) -> list:
    data = json.loads(lab.etcdctl("get", "--prefix", f"{PREFIX}/subnets/", "-w", "json"))
    return sorted((kv["key"], kv["mod_revision"]) for kv in data["kvs"])


def leases(lab) -> dict[str, dict]:
    """Every lease in etcd by key name: its decoded value, etcd lease id and mod revision."""
    data = json.loads(lab.etcdctl("get", "--prefix", f"{PREFIX}/subnets/", "-w", "json"))
    return {base64.b64decode(kv["key"]).decode().rsplit("/", 1)[1]: {
        "value": json.loads(base64.b64decode(kv["value"])), "lease": kv.get("lease", 0),
        "mod_revision": kv["mod_revision"]} for kv in data.get("kvs", [])}


def metric(node, name: str, label: str = "") -> float | None:
    """Sum of the samples of metric ``name`` on ``node``'s /metrics whose labels contain ``label``
    (e.g. ``result="ok"``; "" for all); None when /metrics does not answer, 0.0 without a sample."""
    try:
        status, body = http_get(node.ns, "127.0.0.1", HEALTH_PORT, "/metrics")
    except OSError:
        return None
    if status != 200:
        return None
    total = 0.0
    for line in body.decode().splitlines():
        sample, _, value = line.rpartition(" ")
        if sample.split("{", 1)[0] == name and label in sample:
            total += float(value)
    return total


def vxlan_lease(public_ip: str, mac: str = "c6:d2:32:6f:8f:44") -> str:
    """A lease value as a vxlan node (ours or Flannel's) writes it."""
    return json.dumps({"PublicIP": public_ip, "PublicIPv6": None, "BackendType": "vxlan",
                       "BackendData": {"VNI": 1, "VtepMAC": mac}})


def fdb(node) -> str:
    return subprocess.run(["bridge", "-n", node.ns, "fdb", "show", "dev", "flannel.1"],
                          capture_output=True, text=True, timeout=30).stdout


def log_of(node) -> str:
    with open(node.log, errors="replace") as fh:
        return fh.read()


def vxlan_state(node) -> tuple[str, ...]:
    """What a vxlan node has programmed: flannel.1's index line, owned routes, neighbours, fdb."""
    link = ip("-o", "link", "show", "flannel.1", ns=node.ns, check=False).split(":", 2)[:2]
    return (":".join(link), owned_routes(node), ip("neigh", "show", "dev", "flannel.1", ns=node.ns, check=False),
            fdb(node))


def etcd_reachable(lab, node) -> bool:
    """Can ``node`` talk to etcd over its underlay (``etcdctl endpoint health`` from its namespace)?"""
    proc = nsexec(node.ns, "env", "ETCDCTL_API=3", "etcdctl", f"--endpoints={lab.etcd_endpoints}",
                  "--dial-timeout=3s", "--command-timeout=5s", "endpoint", "health", check=False)
    return proc.returncode == 0


def etcd_connections(node) -> set[str]:
    """The etcd members ``node``'s agent has an established connection to (by address)."""
    out = nsexec(node.ns, "ss", "-Htn", "state", "established", "( dport = :2379 )").stdout
    peers = (line.split()[-1].rsplit(":", 1)[0].strip("[]") for line in out.splitlines() if line.strip())
    return {p.removeprefix("::ffff:") for p in peers}  # gRPC's sockets are dual-stack
