"""Benchmark 4, footprint: agent RSS with 0, 1000 and 10000 peers, its CPU over 60 s of idle
(periodic reconcile and health included), and start-to-ready on an empty store (with
``--baseline DIR``, interleaved with the agent of another checkout, e.g. an older revision made
with ``git worktree add --detach DIR REV``: a regression measured in one run).
Baselines, same run: a bare ``python -c pass`` start and an idle ``sleep`` process have no
meaning for RSS, so the reference figure is the Python interpreter's own RSS after importing
the same libraries the way the agent does (trio, grpc/pyetcd, libnftables, pluggy, and the
rtnetlink part of pyroute2 and the metric types and OpenMetrics exposition of prometheus_client)
and nothing else. Each agent is scraped once the way Prometheus does before its RSS is read.

    sudo .venv/bin/python bench/footprint.py [--sizes 0,1000,10000] [--idle 60] [--baseline DIR]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import PREFIX, Agent, Etcd, main, median, table, write_result  # noqa: E402

# what Prometheus 2.x sends when it scrapes: the agent answers in OpenMetrics
PROMETHEUS_ACCEPT = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
IMPORTS = ("import trio, pyetcd, grpc, nftables, pluggy, time\n"
           "from overlay_core._lean import import_part\n"
           "import_part('pyroute2', 'config.log', 'iproute.linux')\n"
           "import_part('prometheus_client', 'metrics', 'registry', 'utils', 'openmetrics.exposition')\n"
           "time.sleep(3)")


def libraries_rss_mb() -> float:
    proc = subprocess.Popen([sys.executable, "-c", IMPORTS])
    time.sleep(2.5)
    with open(f"/proc/{proc.pid}/status") as fh:
        rss = next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:")) / 1024
    proc.kill()
    proc.wait()
    return rss


def inner(sizes: list[int], idle: float, baseline: str | None) -> None:
    etcd = Etcd()
    try:
        etcd.config()
        starts, stops, base_starts = [], [], []
        for _ in range(7 if baseline else 5):
            agent = Agent.start()
            starts.append(agent.wait_ready())
            stops.append(agent.stop())
            if baseline:
                agent = Agent.start(source=baseline)
                base_starts.append(agent.wait_ready())
                agent.stop()
        rows, results = [], []
        for n in sizes:
            etcd.client.delete_prefix(f"{PREFIX}/subnets/")
            etcd.load_peers(n)
            agent = Agent.start()
            try:
                agent.wait_ready()
                time.sleep(2)
                agent.get("/metrics", accept=PROMETHEUS_ACCEPT)  # scraped, as in production
                cpu0, t0 = agent.cpu_seconds(), time.perf_counter()
                time.sleep(idle)
                cpu = (agent.cpu_seconds() - cpu0) / (time.perf_counter() - t0)
                rss = agent.rss_mb()
            finally:
                agent.stop()
                subprocess.run(["ip", "link", "del", "flannel.1"], capture_output=True)
            rows.append([n, f"{rss:.1f}", f"{cpu * 100:.2f}"])
            results.append({"peers": n, "rss_mb": rss, "idle_cpu_fraction": cpu})
        libs = libraries_rss_mb()
        print(f"start to ready on an empty store: median {median(starts) * 1000:.0f} ms "
              f"(runs: {', '.join(f'{s * 1000:.0f}' for s in starts)})")
        if baseline:
            print(f"  the agent of {baseline}, interleaved: median {median(base_starts) * 1000:.0f} ms "
                  f"(runs: {', '.join(f'{s * 1000:.0f}' for s in base_starts)})")
        print(f"SIGTERM to exit: median {median(stops) * 1000:.0f} ms (target: within a second)")
        print(f"reference: interpreter with the same libraries imported, nothing running: {libs:.1f} MB RSS")
        print(table(rows, ["peers", "RSS MB", f"idle CPU % of a core ({idle:.0f} s)"]))
        path = write_result("footprint", {"start_to_ready_s": starts, "start_to_ready_median_s": median(starts),
                                          "baseline": baseline, "baseline_start_to_ready_s": base_starts,
                                          "sigterm_to_exit_s": stops,
                                          "libraries_rss_mb": libs, "idle_seconds": idle, "results": results,
                                          "targets": "RSS <= 60 MB at 1000 peers; idle CPU <= 1 %; ready <= 1 s"})
        print(f"wrote {path}")
    finally:
        etcd.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="0,1000,10000")
    parser.add_argument("--idle", type=float, default=60)
    parser.add_argument("--baseline", help="a checkout of another revision whose start-to-ready runs interleaved")
    main(__file__, parser, lambda args: inner([int(s) for s in args.sizes.split(",")], args.idle, args.baseline))
