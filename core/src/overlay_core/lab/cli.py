"""``overlay-core lab up|status|down``."""

from __future__ import annotations

import argparse
import json
import os
import shutil

from ..errors import OverlayError

COLUMNS = [("node", "NODE"), ("public_ip", "PUBLIC IP"), ("subnet", "SUBNET"),
           ("backend", "BACKEND"), ("peers", "PEERS"), ("ready", "READY"), ("agent", "AGENT")]


def print_table(rows: list[dict]) -> None:
    table = [[title for _, title in COLUMNS]]
    for row in rows:
        table.append([("yes" if row[k] else "no") if k == "ready" else str(row.get(k, "-"))
                      for k, _ in COLUMNS])
    widths = [max(len(r[i]) for r in table) for i in range(len(COLUMNS))]
    for line in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip())


def _preflight() -> None:
    if os.geteuid() != 0:
        raise OverlayError("the lab creates network namespaces: run it as root")
    for tool, package in (("ip", "iproute2"), ("etcd", "etcd-server"), ("etcdctl", "etcd-client")):
        if not shutil.which(tool):
            raise OverlayError(f"{tool} is missing; install it: apt-get install {package}")


def cmd_lab(ns: argparse.Namespace) -> int:
    from .lab import Lab

    _preflight()
    lab = Lab(ns.name)
    if ns.lab_command == "up":
        rows = lab.up(nodes=ns.nodes, backend=ns.backend, network=ns.network, wait=ns.wait)
        print(f"lab {ns.name!r}: etcd at {lab.etcd.url} in {lab.etcd_ns}, {len(rows)} nodes")
        print_table(rows)
        print(f"\nlogs and subnet files: {lab.dir}; stop it with: overlay-core lab down"
              + (f" --name {ns.name}" if ns.name != "lab" else ""))
        return 0 if all(r["ready"] for r in rows) else 1
    if ns.lab_command == "status":
        rows = lab.status()
        if ns.json:
            print(json.dumps(rows, indent=2))
        elif not rows:
            print(f"lab {ns.name!r} is not up")
        else:
            print_table(rows)
        return 0
    removed = lab.down()
    print(f"lab {ns.name!r} down: removed {len(removed)} namespaces" +
          (f" ({', '.join(removed)})" if removed else ""))
    return 0


def add_lab_parser(sub) -> None:
    lab = sub.add_parser("lab", help="local multi-node lab in network namespaces")
    lab_sub = lab.add_subparsers(dest="lab_command", metavar="ACTION")
    lab_sub.required = True
    up = lab_sub.add_parser("up", help="build the lab, start etcd and one agent per node")
    up.add_argument("--nodes", type=int, default=3)
    up.add_argument("--backend", default="alloc", help="Backend.Type for the network config")
    up.add_argument("--network", default="10.5.0.0/16", help="cluster network (inside 10.0.0.0/8)")
    up.add_argument("--wait", type=float, default=60.0, help="seconds to wait for readiness")
    status = lab_sub.add_parser("status", help="show every node's lease and readiness")
    status.add_argument("--json", action="store_true")
    lab_sub.add_parser("down", help="remove every namespace and process of the lab")
    for parser in (up, status, lab_sub.choices["down"]):
        parser.add_argument("--name", default="lab", help="lab name (several labs can coexist)")
        parser.set_defaults(func=cmd_lab)
