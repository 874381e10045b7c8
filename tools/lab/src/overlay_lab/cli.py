"""``overlay-core lab up|status|down``."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time

from overlay_core import hookimpl
from overlay_core.errors import OverlayError

COLUMNS = [("node", "NODE"), ("public_ip", "PUBLIC IP"), ("subnet", "SUBNET"),
           ("backend", "BACKEND"), ("peers", "PEERS"), ("modes", "PEER MODES"), ("states", "PEER STATES"),
           ("store", "STORE"), ("ready", "READY"), ("agent", "AGENT")]


def _states(row: dict) -> str:
    """Peers by the state their backend reports (``peer_states`` in /readyz)."""
    counts = row.get("peer_states", {})
    rejected = len(row.get("rejected_leases", {}))
    parts = [f"{k}:{v}" for k, v in sorted(counts.items())] + ([f"rejected:{rejected}"] if rejected else [])
    return " ".join(parts) or "-"


def _store(row: dict) -> str:
    store = row.get("store")
    if not isinstance(store, dict):
        return "-"
    if store.get("connected"):
        return "ok"
    since = store.get("since")
    return f"down {time.time() - since:.0f}s" if since else "down"


def print_table(rows: list[dict]) -> None:
    table = [[title for _, title in COLUMNS]]
    for row in rows:
        row = {**row, "modes": " ".join(f"{k}:{v}" for k, v in sorted(row.get("peer_modes", {}).items())) or "-",
               "states": _states(row), "store": _store(row)}
        table.append([("yes" if row[k] else "no") if k == "ready" else str(row.get(k, "-"))
                      for k, _ in COLUMNS])
    widths = [max(len(r[i]) for r in table) for i in range(len(COLUMNS))]
    for line in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip())


def print_matrix(matrix: dict) -> bool:
    names = sorted({a for a, _ in matrix} | {b for _, b in matrix})
    width = max(len(n) for n in names) + 2
    print("ping".ljust(width) + "".join(n.ljust(width) for n in names))
    ok = True
    for src in names:
        cells = []
        for dst in names:
            if src == dst:
                cells.append("-")
                continue
            sent, got = matrix[(src, dst)]
            ok &= sent > 0 and sent == got
            cells.append(f"{got}/{sent}")
        print(src.ljust(width) + "".join(c.ljust(width) for c in cells))
    return ok


def _option(text: str) -> tuple[str, object]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"{text!r}: use KEY=VALUE, for example DirectRouting=true")
    key, raw = text.split("=", 1)
    try:
        return key, json.loads(raw)
    except ValueError:
        return key, raw


def _preflight() -> None:
    if os.geteuid() != 0:
        raise OverlayError("the lab creates network namespaces: run it as root")
    for tool, package in (("ip", "iproute2"), ("etcd", "etcd-server"), ("etcdctl", "etcd-client")):
        if not shutil.which(tool):
            raise OverlayError(f"{tool} is missing; install it: apt-get install {package}")


def check_up_arguments(ns: argparse.Namespace) -> None:
    """Refuse, before anything is built, a lab whose ping matrix could only fail or crash.

    The minimum is one node without pods (leases and subnet files to look at) and two with
    pods: a ping matrix needs a pair of nodes.
    """
    if ns.nodes < 1:
        raise OverlayError(f"--nodes {ns.nodes}: a lab needs at least one node")
    if ns.pods < 0:
        raise OverlayError(f"--pods {ns.pods}: use 0 (no pods) or more")
    if ns.pods and ns.nodes < 2:
        raise OverlayError(f"--nodes {ns.nodes} with pods: the ping matrix needs at least 2 nodes; "
                           "use --nodes 2 or more, or --pods 0 for leases and subnet files only")
    backend = ns.backend.lower()
    if backend == "alloc" and ns.pods:
        raise OverlayError("--backend alloc programs no data plane, so pods on different nodes cannot "
                           "reach each other: add --pods 0 to see leases and subnet files only")
    if backend == "host-gw" and ns.remote_nodes:
        raise OverlayError("--backend host-gw needs every node on one L2 segment, and --remote-nodes puts "
                           "nodes behind a router: drop --remote-nodes, or use vxlan (with --option "
                           "DirectRouting=true for both paths)")
    if ns.wait <= 0:
        raise OverlayError(f"--wait {ns.wait}: use a positive number of seconds")


FAMILIES = {"": "IPv4", "dual": "both families", "only": "IPv6"}


def cmd_lab(ns: argparse.Namespace) -> int:
    from .lab import Lab

    if ns.lab_command == "up":
        check_up_arguments(ns)
    _preflight()
    lab = Lab(ns.name)
    if ns.lab_command == "up":
        from .traffic import add_pods, bandwidth, ping_matrix

        rows = lab.up(nodes=ns.nodes, backend=ns.backend, network=ns.network, wait=ns.wait,
                      ipv6=ns.ipv6, remote_nodes=ns.remote_nodes, backend_options=dict(ns.option),
                      replace=ns.replace)
        print(f"lab {ns.name!r}: etcd at {lab.etcd.url} in {lab.etcd_ns}, {len(rows)} nodes")
        print_table(rows)
        ok = all(r["ready"] for r in rows)
        if ns.pods:
            for node in lab.state.nodes:
                add_pods(lab, node, ns.pods)
            print(f"\npods: {ns.pods} per node; ping matrix (received/sent, {FAMILIES[ns.ipv6]}):")
            ok &= print_matrix(ping_matrix(lab))
            if ns.traffic and len(lab.state.nodes) >= 2:
                print(f"\nTCP throughput (iperf3, {3} s each):")
                for label, mbits in bandwidth(lab).items():
                    print(f"  {label:<24} {mbits:9.0f} Mbit/s")
        print(f"\nlogs and subnet files: {lab.dir}; stop it with: {lab.down_command}")
        return 0 if ok else 1
    if ns.lab_command == "status":
        rows = lab.status()
        if ns.json:
            print(json.dumps(rows, indent=2))
        elif not rows:
            print(f"lab {ns.name!r} is not up", file=sys.stderr)
        else:
            print_table(rows)
        return 0 if rows else 1
    removed = lab.down()
    print(f"lab {ns.name!r} down: removed {len(removed)} namespaces" +
          (f" ({', '.join(removed)})" if removed else ""))
    return 0


@hookimpl
def overlay_register_commands(subparsers) -> None:
    add_lab_parser(subparsers)


def add_lab_parser(sub) -> None:
    lab = sub.add_parser("lab", help="local multi-node lab in network namespaces")
    lab_sub = lab.add_subparsers(dest="lab_command", metavar="ACTION")
    lab_sub.required = True
    up = lab_sub.add_parser("up", help="build the lab, start etcd and one agent per node")
    up.add_argument("--nodes", type=int, default=3, help="number of nodes, 2 or more with pods (default: %(default)s)")
    up.add_argument("--backend", default="vxlan", help="Backend.Type for the network config (default: %(default)s)")
    up.add_argument("--network", default="10.5.0.0/16",
                    help="cluster network, inside 10.0.0.0/8 (default: %(default)s)")
    up.add_argument("--option", action="append", type=_option, default=[], metavar="KEY=VALUE",
                    help="a Backend option (JSON value), e.g. DirectRouting=true; repeatable")
    up.add_argument("--ipv6", choices=["dual", "only"], default="",
                    help="dual-stack, or IPv6 only (pods from 2001:db8:10::/48); default: IPv4 only")
    up.add_argument("--remote-nodes", type=int, default=0,
                    help="put the last N nodes on a second L2 segment behind a router (default: %(default)s)")
    up.add_argument("--pods", type=int, default=1, help="pods per node, 0: none (default: %(default)s)")
    up.add_argument("--no-traffic", dest="traffic", action="store_false",
                    help="skip the iperf3 bandwidth run")
    up.add_argument("--wait", type=float, default=60.0, help="seconds to wait for readiness (default: %(default)s)")
    up.add_argument("--replace", action="store_true", help="take down a lab of this name that is up first")
    status = lab_sub.add_parser("status", help="show every node's lease and readiness")
    status.add_argument("--json", action="store_true")
    lab_sub.add_parser("down", help="remove every namespace and process of the lab")
    for parser in (up, status, lab_sub.choices["down"]):
        parser.add_argument("--name", default="lab", help="lab name, several labs can coexist (default: %(default)s)")
        parser.set_defaults(func=cmd_lab, parser=parser)
