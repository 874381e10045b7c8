"""Shared helpers of the end-to-end tests."""

import json
import time

from overlay_core.lab.lab import PREFIX
from overlay_core.lab.netns import ip, kernel_supports  # noqa: F401 (re-exported for tests)
from overlay_core.lab.traffic import add_pods, ping_matrix


def wait_until(predicate, timeout=20.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


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
