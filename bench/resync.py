"""Benchmark 3, resync: etcd compacts past the agent's watch while the agent is away (SIGSTOP,
etcd restarted, two writes, compaction); on SIGCONT the agent's re-watch fails with
"compacted", it re-lists and diffs. Measured: the agent's CPU and wall time for that, the
number of etcd Range calls (etcd's own metrics) and the kernel writes (netlink events seen in
the namespace). Nothing changed in the peers, so the right answer is zero writes.
Baseline, same run: one client range read + JSON decode of the same keys (pyetcd).

    sudo .venv/bin/python bench/resync.py [--peers 5000] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import PREFIX, Agent, Etcd, main, median, table, write_result  # noqa: E402

KERNEL_WRITES = {24, 25, 28, 29}  # NEW/DEL ROUTE, NEW/DEL NEIGH (FDB entries are neighbour messages too)


def count_kernel_writes(counter: list[int], stop: threading.Event) -> None:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)
    sock.bind((0, 0x4 | 0x40 | 0x400))
    sock.settimeout(0.1)
    while not stop.is_set():
        try:
            data = sock.recv(1 << 16)
        except TimeoutError:
            continue
        offset = 0
        while offset + 16 <= len(data):
            length = int.from_bytes(data[offset:offset + 4], "little")
            kind = int.from_bytes(data[offset + 4:offset + 6], "little")
            counter[0] += kind in KERNEL_WRITES
            offset += (length + 3) & ~3


def one_run(etcd: Etcd, agent: Agent) -> dict:
    relists = agent.metric("overlay_watch_relists_total")
    changes = agent.metric("overlay_reconcile_changes_total")
    agent.proc.send_signal(signal.SIGSTOP)
    etcd.restart()
    etcd.client.put(f"{PREFIX}/bench-bump", "1")
    rev = etcd.client.put(f"{PREFIX}/bench-bump", "2").header.revision
    etcd.client.compact(rev, physical=True)
    ranges_before = etcd.range_count()
    writes, stop = [0], threading.Event()
    watcher = threading.Thread(target=count_kernel_writes, args=(writes, stop), daemon=True)
    watcher.start()
    time.sleep(0.2)
    cpu_before = agent.cpu_seconds()
    started = time.perf_counter()
    agent.proc.send_signal(signal.SIGCONT)
    deadline = time.monotonic() + 60
    while agent.metric("overlay_watch_relists_total") <= relists:
        if time.monotonic() > deadline:
            raise RuntimeError("no re-list happened")
        time.sleep(0.02)
    wall = time.perf_counter() - started
    time.sleep(0.3)  # let anything the resync might still write show up
    cpu = agent.cpu_seconds() - cpu_before
    stop.set()
    watcher.join()
    return {"cpu_s": cpu, "wall_s": wall, "agent_resync_s": agent.metric("overlay_last_resync_seconds"),
            "range_reads": etcd.range_count() - ranges_before, "kernel_writes": writes[0],
            "reconcile_changes": agent.metric("overlay_reconcile_changes_total") - changes}


def baseline(etcd: Etcd) -> float:
    started = time.perf_counter()
    for value, _meta in etcd.client.get_prefix(f"{PREFIX}/subnets/"):
        json.loads(value)
    return time.perf_counter() - started


def inner(peers: int, runs: int) -> None:
    etcd = Etcd()
    agent = None
    try:
        etcd.config()
        etcd.load_peers(peers)
        agent = Agent.start("--reconcile-interval=600")
        agent.wait_ready()
        results = [one_run(etcd, agent) for _ in range(runs)]
        base = median([baseline(etcd) for _ in range(runs)])
        rows = [[i + 1, f"{r['cpu_s'] * 1000:.0f}", f"{r['agent_resync_s'] * 1000:.0f}", f"{r['wall_s'] * 1000:.0f}",
                 r["range_reads"], r["kernel_writes"], int(r["reconcile_changes"])] for i, r in enumerate(results)]
        print(f"re-list after compaction with {peers} peers (nothing changed); client range+decode baseline "
              f"{base * 1000:.0f} ms")
        print(table(rows, ["run", "agent CPU ms", "re-list+diff ms", "SIGCONT->done ms", "etcd Range calls",
                           "kernel writes", "reconcile changes"]))
        path = write_result("resync", {"peers": peers, "runs": results, "baseline_range_decode_s": base,
                                       "cpu_s_median": median([r["cpu_s"] for r in results]),
                                       "target": "<= 0.5 s CPU, one range read, zero kernel writes"})
        print(f"wrote {path}")
    finally:
        if agent:
            agent.proc.send_signal(signal.SIGCONT)
            agent.stop()
        etcd.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--peers", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=3)
    main(__file__, parser, lambda args: inner(args.peers, args.runs))
