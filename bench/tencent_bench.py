"""Benchmark, tencent-vpc: time from backend start to own route present, and VPC API calls.

Each node is the ``Backend`` class driven through the agent's hooks: at its lease it reads the
instance metadata (3 GETs), describes its VPC's route tables and creates its own route, then the
agent's first full converge describes once more; all through the real TencentCloud SDK against
the local fake VPC API (signatures checked), which adds ``--latency`` seconds to every call
(Tencent's public endpoint is tens of ms away).
With ``--nodes N`` the nodes start together in this one process and share one route table, as
a cluster does (their CPU then adds up here, unlike on N machines). Then every node runs
``--reconciles`` converges with nothing changed (goal: 1 DescribeRouteTables, 0 writes each),
and one converge after its route was deleted by hand (goal: restored with 1 describe + 1 create).
Also measured: the time and memory that importing the package adds to core, in a fresh
interpreter (the SDK's VPC model module is 2.6 MB of source). A first run warms up and is not
counted. Nothing touches the kernel; the fake servers listen on 127.0.0.1 only.

    .venv/bin/python bench/tencent_bench.py [--nodes 1] [--latency 0.05] [--reconciles 5] [--runs 3]

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections import Counter
from ipaddress import IPv4Address, IPv4Network

import trio
from overlay_core import ExternalInterface, Node, parse_config
from overlay_core.lease import Lease, LeaseAttrs
from overlay_tencent_vpc.backend import TencentVpcBackend
from overlay_tencent_vpc.testing import FakeCloud, FakeVpc, FakeVpcServer

CLOUD = FakeCloud()
NETWORK = IPv4Network("10.5.0.0/16")


IMPORT_PROBE = """
import os, time
import overlay_core, trio
def rss(): return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
before, t = rss(), time.perf_counter()
import overlay_tencent_vpc.backend
print(time.perf_counter() - t, rss() - before)
"""


def import_cost() -> tuple[float, float]:
    """Seconds and MB of resident memory that ``import overlay_tencent_vpc`` adds to core, in a fresh interpreter."""
    out = subprocess.run([sys.executable, "-c", IMPORT_PROBE], capture_output=True, text=True, check=True).stdout
    seconds, mb = out.split()
    return float(seconds), float(mb)


def make_backend(index: int, api_url: str, metadata_url: str) -> TencentVpcBackend:
    """The Backend as the agent builds it, for node ``192.0.2.<10+index>`` (no services: no metrics)."""
    address = IPv4Address(f"192.0.2.{10 + index}")
    config = parse_config(json.dumps({"Network": str(NETWORK), "Backend": CLOUD.backend_config(api_url, metadata_url)}))
    node = Node(config, ExternalInterface("eth0", 2, 1500, address=address, public_ip=address), netlink=None)
    backend = TencentVpcBackend(node)
    backend.overlay_network_config(config, node)
    return backend


async def one_node(index: int, vpc: FakeVpc, api_url: str, metadata_url: str, reconciles: int) -> dict:
    subnet = IPv4Network(f"10.5.{index}.0/24")
    backend = make_backend(index, api_url, metadata_url)
    node = backend.node
    start = time.perf_counter()
    node.lease = Lease(subnet, None, LeaseAttrs(node.iface.public_ip, None, ""))
    await backend.overlay_lease_acquired(node.lease)  # the agent's startup hook: metadata, client, route
    ready = time.perf_counter() - start
    gateway = str(node.iface.public_ip)
    present = any(r.destination == str(subnet) and r.gateway_id == gateway for r in vpc.routes(CLOUD.table_id))
    await backend.overlay_store_in_sync([])  # the agent's first full converge
    api = backend.api
    assert api is not None
    at_start = dict(api.calls)
    before = Counter(api.calls)
    for _ in range(reconciles):
        await backend.overlay_reconcile([])
    steady = Counter(api.calls)
    steady.subtract(before)
    vpc.console_delete(CLOUD.table_id, str(subnet))
    before = Counter(api.calls)
    t = time.perf_counter()
    await backend.overlay_reconcile([])
    restore = time.perf_counter() - t
    repair = Counter(api.calls)
    repair.subtract(before)
    await backend.overlay_shutdown()
    return {
        "start_to_route_s": ready,
        "route_present": present and backend.problem is None,
        "calls_at_start": at_start,
        "calls_per_reconcile": {k: v / reconciles for k, v in steady.items() if v},
        "restore_s": restore,
        "calls_to_restore": {k: v for k, v in repair.items() if v},
    }


async def run_once(nodes: int, latency: float, reconciles: int) -> list[dict]:
    vpc = CLOUD.vpc()
    vpc.faults.latency = latency
    results: list[dict] = [{}] * nodes
    with FakeVpcServer(vpc) as api_server, CLOUD.metadata_server() as metadata:
        async def node(i: int) -> None:
            results[i] = await one_node(i, vpc, api_server.url, metadata.base_url, reconciles)

        with trio.fail_after(60 + nodes * (reconciles + 4) * latency * 4):
            async with trio.open_nursery() as nursery:
                for i in range(nodes):
                    nursery.start_soon(node, i)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1, help="nodes starting together in this one process")
    parser.add_argument("--latency", type=float, default=0.05, help="seconds the fake API adds per call")
    parser.add_argument("--reconciles", type=int, default=5)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    if not (1 <= args.nodes <= 45 and 1 <= args.runs <= 20 and 1 <= args.reconciles <= 100):
        parser.error("--nodes 1..45 (one table), --runs 1..20, --reconciles 1..100")
    trio.run(run_once, 1, args.latency, 1)  # warm-up: lazy imports and first-use costs, not counted
    runs = [trio.run(run_once, args.nodes, args.latency, args.reconciles) for _ in range(args.runs)]
    import_s, import_mb = import_cost()
    nodes = [n for run in runs for n in run]
    start = sorted(n["start_to_route_s"] for n in nodes)
    print(json.dumps({
        "nodes": args.nodes,
        "runs": args.runs,
        "api_latency_ms": args.latency * 1000,
        "import_ms": round(import_s * 1000, 1),
        "import_rss_mb": round(import_mb, 1),
        "start_to_route_ms": {"median": round(statistics.median(start) * 1000, 1),
                              "max": round(start[-1] * 1000, 1)},
        "all_routes_present": all(n["route_present"] for n in nodes),
        "api_calls_per_node_at_start": nodes[0]["calls_at_start"],
        "api_calls_at_start_all_equal": all(n["calls_at_start"] == nodes[0]["calls_at_start"] for n in nodes),
        "metadata_reads_per_node_at_start": 3,
        "api_calls_per_reconcile_unchanged": nodes[0]["calls_per_reconcile"],
        "reconcile_calls_all_equal": all(n["calls_per_reconcile"] == nodes[0]["calls_per_reconcile"] for n in nodes),
        "restore_after_console_delete_ms": round(statistics.median(n["restore_s"] for n in nodes) * 1000, 1),
        "api_calls_to_restore": nodes[0]["calls_to_restore"],
    }, indent=2))


if __name__ == "__main__":
    main()
