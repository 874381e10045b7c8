"""Benchmark 5, data plane: pod-to-pod TCP throughput (iperf3, 3 s, 3 runs, median) per backend
in the lab, next to node-to-node on the underlay and next to the same backend configured by
hand as Flannel would (same devices, MTU and routes, written with ip/bridge), all in one run.

    sudo .venv/bin/python bench/dataplane.py [--backends vxlan,host-gw,ipip] [--runs 3]

Backends other than the three kernel-only ones bring their hand-configured baseline in
``bench/hand_<type>.py`` (``-`` as ``_``): ``by_hand(lab)`` programs every node of a two-node lab
as Flannel (or the tool by itself) would, ``lab_options(lab)`` gives the lab's ``Backend``
options (optional), and ``cleanup(lab)`` stops what it started (optional).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import median, table, write_result  # noqa: E402
from overlay_core.testing.netns import ip, kernel_supports  # noqa: E402
from overlay_lab.lab import Lab  # noqa: E402
from overlay_lab.traffic import add_pods, iperf, pods_of  # noqa: E402

MTU = {"vxlan": 1450, "host-gw": 1500, "ipip": 1480, "extension": 1500}  # extension: the lab's shell host-gw


def hand_module(backend: str):
    """The baseline module of a backend outside this file (``hand_<type>.py``), or None."""
    if backend in MTU:
        return None
    import importlib

    return importlib.import_module(f"hand_{backend.replace('-', '_')}")


def by_hand(lab: Lab, backend: str) -> None:
    """What flanneld would have programmed, written with iproute2 (no agent running)."""
    nodes = lab.state.nodes
    macs = {n.name: f"0a:58:0a:05:{i:02x}:01" for i, n in enumerate(nodes, start=1)}
    for i, node in enumerate(nodes, start=1):
        if backend == "vxlan":
            ip("link", "add", "flannel.1", "address", macs[node.name], "type", "vxlan", "id", "1", "local", node.ip,
               "dev", "eth0", "dstport", "8472", "nolearning", ns=node.ns)
        elif backend == "ipip":
            ip("link", "add", "flannel.ipip", "type", "ipip", "local", node.ip, ns=node.ns)
        dev = {"vxlan": "flannel.1", "ipip": "flannel.ipip"}.get(backend)
        if dev:
            ip("link", "set", dev, "mtu", str(MTU[backend]), "up", ns=node.ns)
            ip("addr", "add", f"10.5.{i}.0/32", "dev", dev, ns=node.ns)
        for j, peer in enumerate(nodes, start=1):
            if peer is node:
                continue
            if backend == "vxlan":
                ip("neigh", "replace", f"10.5.{j}.0", "lladdr", macs[peer.name], "dev", "flannel.1", "nud", "permanent",
                   ns=node.ns)
                subprocess.run(["bridge", "-n", node.ns, "fdb", "append", macs[peer.name], "dev", "flannel.1", "dst",
                                peer.ip, "self", "permanent"], check=True)
                ip("route", "replace", f"10.5.{j}.0/24", "via", f"10.5.{j}.0", "dev", "flannel.1", "onlink", ns=node.ns)
            elif backend == "ipip":
                ip("route", "replace", f"10.5.{j}.0/24", "via", peer.ip, "dev", "flannel.ipip", "onlink", ns=node.ns)
            else:
                ip("route", "replace", f"10.5.{j}.0/24", "via", peer.ip, "dev", "eth0", ns=node.ns)
        with open(node.subnet_file, "w") as fh:
            fh.write(f"FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET=10.5.{i}.1/24\nFLANNEL_MTU={MTU[backend]}\n"
                     "FLANNEL_IPMASQ=false\n")


def measure(lab: Lab, runs: int) -> tuple[list[float], list[float]]:
    for node in lab.state.nodes:
        add_pods(lab, node, 1)
    a, b = pods_of(lab)[:2]
    n1, n2 = lab.node(1), lab.node(2)
    pod = [iperf(b.ns, a.ns, b.ipv4) for _ in range(runs)]
    underlay = [iperf(n2.ns, n1.ns, n2.ip) for _ in range(runs)]
    return pod, underlay


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backends", default="vxlan,host-gw,ipip")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--result", default="dataplane", help="name of the JSON file in bench/results")
    args = parser.parse_args()
    root = tempfile.mkdtemp(prefix="ovl-bench-lab-")
    rows, results = [], []
    for backend in args.backends.split(","):
        if backend == "ipip" and not kernel_supports("ipip"):
            print(f"{backend}: skipped, this kernel has no ipip module")
            results.append({"backend": backend, "skipped": "kernel has no ipip module"})
            continue
        lab = Lab(f"bdp{os.getpid() % 1000}", state_root=root)
        hand = hand_module(backend)
        options = hand.lab_options(lab) if hand is not None and hasattr(hand, "lab_options") else None
        try:
            lab.up(nodes=2, backend=backend, backend_options=options)
            agent_pod, underlay = measure(lab, args.runs)
            lab.down()
            lab.up(nodes=2, backend=backend, start_agents=False, backend_options=options)
            if hand is None:
                by_hand(lab, backend)
            else:
                hand.by_hand(lab)
            hand_pod, underlay2 = measure(lab, args.runs)
        finally:
            if hand is not None and hasattr(hand, "cleanup"):
                hand.cleanup(lab)
            lab.down()
        a, h, u = median(agent_pod), median(hand_pod), median(underlay + underlay2)
        rows.append([backend, f"{a:.0f}", f"{h:.0f}", f"{u:.0f}", f"{a / h:.2f}", f"{a / u:.2f}"])
        results.append({"backend": backend, "agent_pod_mbits": agent_pod, "hand_pod_mbits": hand_pod,
                        "underlay_mbits": underlay + underlay2, "agent_over_hand": a / h, "agent_over_underlay": a / u})
    print(f"pod->pod TCP throughput, Mbit/s, median of {args.runs} x 3 s iperf3 runs")
    print(table(rows, ["backend", "overlay agent", "by hand (Flannel's config)", "underlay node->node",
                       "agent/hand", "agent/underlay"]))
    path = write_result(args.result, {"runs": args.runs, "results": results,
                                      "targets": "agent >= 0.95 x by hand; host-gw >= 0.95 x underlay"})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
