"""Benchmark 1, cold sync: N fake VXLAN peers in etcd, one agent starts; time to all 3N kernel
objects programmed and /readyz, minus the same agent's start-to-ready on an empty store.
Baseline, same run: the same 3N objects written by ``ip -batch`` + ``bridge -batch`` into a
fresh namespace holding an identical flannel.1.

    sudo .venv/bin/python bench/cold_sync.py [--sizes 1000,5000,10000] [--runs 3] [--agent-source DIR]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import PREFIX, Agent, Etcd, fake_peer, kernel_counts, main, median, table, write_result  # noqa: E402


def baseline(n: int) -> float:
    """Seconds for ip -batch + bridge -batch to write the same objects as the agent."""
    ns = f"ovl-bench-base-{os.getpid()}"
    run = lambda *a, **kw: subprocess.run(["ip", "-n", ns, *a], check=True, **kw)  # noqa: E731
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        run("link", "add", "eth0", "type", "veth", "peer", "name", "eth0p")
        run("addr", "add", "192.0.2.1/24", "dev", "eth0")
        run("link", "set", "eth0", "up")
        run("link", "add", "flannel.1", "type", "vxlan", "id", "1", "local", "192.0.2.1", "dev", "eth0",
            "dstport", "8472", "nolearning")
        run("link", "set", "flannel.1", "up")
        ip_lines, fdb_lines = [], []
        for i in range(n):
            key, value = fake_peer(i)
            subnet = key.replace("-", "/")
            base = subnet.split("/")[0]
            mac = value.split('"VtepMAC":"')[1][:17]
            public = value.split('"PublicIP":"')[1].split('"')[0]
            ip_lines.append(f"neigh replace {base} lladdr {mac} dev flannel.1 nud permanent")
            ip_lines.append(f"route replace {subnet} via {base} dev flannel.1 onlink proto 79")
            fdb_lines.append(f"fdb replace {mac} dev flannel.1 dst {public} self permanent")
        started = time.perf_counter()
        subprocess.run(["bridge", "-n", ns, "-batch", "-"], input="\n".join(fdb_lines).encode(), check=True)
        subprocess.run(["ip", "-n", ns, "-batch", "-"], input="\n".join(ip_lines).encode(), check=True)
        return time.perf_counter() - started
    finally:
        subprocess.run(["ip", "netns", "del", ns])


def agent_run(etcd: Etcd, n: int, source: str | None = None) -> tuple[float, tuple[int, int, int]]:
    agent = Agent.start("--reconcile-interval=600", source=source)
    try:
        ready = agent.wait_ready()
        return ready, kernel_counts()
    finally:
        agent.stop()
        subprocess.run(["ip", "link", "del", "flannel.1"], capture_output=True)


def inner(sizes: list[int], runs: int, source: str | None = None) -> None:
    """``source``: a checkout of another revision whose agent is measured instead (same baseline)."""
    etcd = Etcd()
    try:
        etcd.config()
        empty = median([agent_run(etcd, 0, source)[0] for _ in range(runs)])
        rows, results = [], []
        loaded = 0
        for n in sizes:
            etcd.client.delete_prefix(f"{PREFIX}/subnets/")
            etcd.load_peers(n)
            loaded = n
            agent_times, counts = [], None
            for _ in range(runs):
                t, counts = agent_run(etcd, n, source)
                agent_times.append(t - empty)
            base = median([baseline(n) for _ in range(runs)])
            sync = median(agent_times)
            ok = counts == (n, n, n)
            rows.append([n, f"{3 * n}", f"{sync * 1000:.0f}", f"{base * 1000:.0f}", f"{sync / base:.2f}x",
                         "yes" if ok else f"NO {counts}"])
            results.append({"peers": n, "objects": 3 * n, "agent_sync_s": sync, "agent_runs_s": agent_times,
                            "baseline_s": base, "ratio": sync / base, "kernel_counts": counts})
        print(f"empty store: start to ready {empty * 1000:.0f} ms (subtracted)")
        print(table(rows, ["peers", "objects", "agent ms", "ip/bridge -batch ms", "ratio", "all programmed"]))
        path = write_result("cold_sync" if source is None else "cold_sync_other",
                            {"empty_start_to_ready_s": empty, "runs": runs, "results": results, "agent_source": source,
                                          "target": "agent <= 2x baseline"})
        print(f"wrote {path}; peers loaded: {loaded}")
    finally:
        etcd.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="1000,5000,10000")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--agent-source", help="measure the agent of this checkout (another revision) instead")
    main(__file__, parser, lambda args: inner([int(s) for s in args.sizes.split(",")], args.runs, args.agent_source))
