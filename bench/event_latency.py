"""Benchmark 2, event latency: with 1000 peers programmed, 500 lease changes (add a peer,
change its VTEP MAC, remove it) are written to etcd one at a time; for each, the time from the
etcd write to the kernel object present (or gone) on the watching agent, seen through a netlink
event subscription in this process. Baseline, same run: the etcd write alone (put round trip).

    sudo .venv/bin/python bench/event_latency.py [--peers 1000] [--changes 500] [--agent-source DIR]
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import queue
import socket
import struct
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import PREFIX, Agent, Etcd, fake_peer, main, table, write_result  # noqa: E402

RTM_NEWROUTE, RTM_DELROUTE, RTM_NEWNEIGH = 24, 25, 28
GROUPS = 0x4 | 0x40  # RTMGRP_NEIGH | RTMGRP_IPV4_ROUTE


def events(out: queue.Queue, stop: threading.Event) -> None:
    """Timestamp every route/neighbour event as it arrives: (time, type, dst, lladdr)."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    sock.bind((0, GROUPS))
    sock.settimeout(0.2)
    while not stop.is_set():
        try:
            data = sock.recv(1 << 16)
        except TimeoutError:
            continue
        now = time.perf_counter()
        offset = 0
        while offset + 16 <= len(data):
            length, kind = struct.unpack_from("=IH", data, offset)
            body = offset + 16
            fixed = 12 if kind in (RTM_NEWROUTE, RTM_DELROUTE) else 12
            dst = lladdr = None
            pos = body + fixed
            while pos + 4 <= offset + length:
                alen, atype = struct.unpack_from("=HH", data, pos)
                if alen < 4:
                    break
                value = data[pos + 4: pos + alen]
                if atype == 1:
                    dst = str(ipaddress.ip_address(value))
                elif atype == 2 and kind == RTM_NEWNEIGH:
                    lladdr = value.hex(":")
                pos += (alen + 3) & ~3
            out.put((now, kind, dst, lladdr))
            offset += (length + 3) & ~3


def wait_for(q: queue.Queue, kind: int, dst: str, lladdr: str | None = None, timeout: float = 5.0) -> float:
    deadline = time.perf_counter() + timeout
    while True:
        left = deadline - time.perf_counter()
        if left <= 0:
            raise TimeoutError(f"no event {kind} for {dst}")
        when, got_kind, got_dst, got_mac = q.get(timeout=left)
        if got_kind == kind and got_dst == dst and (lladdr is None or got_mac == lladdr):
            return when


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def inner(peers: int, changes: int, source: str | None = None) -> None:
    etcd = Etcd()
    stop = threading.Event()
    q: queue.Queue = queue.Queue()
    agent = None
    try:
        etcd.config()
        etcd.load_peers(peers)
        agent = Agent.start("--reconcile-interval=600", source=source)
        agent.wait_ready()
        reader = threading.Thread(target=events, args=(q, stop), daemon=True)
        reader.start()
        time.sleep(0.2)
        put = etcd.client.put
        latencies: dict[str, list[float]] = {"add": [], "change MAC": [], "remove": []}
        puts: list[float] = []
        for j in range(changes):
            i = peers + 1000 + j // 3
            key, value = fake_peer(i)
            subnet_base = key.split("-")[0]
            full = f"{PREFIX}/subnets/{key}"
            op = ("add", "change MAC", "remove")[j % 3]
            while not q.empty():
                q.get_nowait()
            if op == "add":
                t0 = time.perf_counter()
                put(full, value)
                puts.append(time.perf_counter() - t0)
                t1 = wait_for(q, RTM_NEWROUTE, subnet_base)
            elif op == "change MAC":
                mac = "0e" + value.split('"VtepMAC":"')[1][2:17]
                t0 = time.perf_counter()
                put(full, value.replace(value.split('"VtepMAC":"')[1][:17], mac))
                puts.append(time.perf_counter() - t0)
                t1 = wait_for(q, RTM_NEWNEIGH, subnet_base, mac)
            else:
                t0 = time.perf_counter()
                etcd.client.delete(full)
                puts.append(time.perf_counter() - t0)
                t1 = wait_for(q, RTM_DELROUTE, subnet_base)
            latencies[op].append((t1 - t0) * 1000)
        allv = [v for values in latencies.values() for v in values]
        rows = [[name, len(v), f"{percentile(v, 50):.1f}", f"{percentile(v, 90):.1f}", f"{percentile(v, 99):.1f}",
                 f"{max(v):.1f}"] for name, v in [*latencies.items(), ("all", allv)]]
        put_ms = [p * 1000 for p in puts]
        rows.append(["baseline: etcd put alone", len(put_ms), f"{percentile(put_ms, 50):.1f}",
                     f"{percentile(put_ms, 90):.1f}", f"{percentile(put_ms, 99):.1f}", f"{max(put_ms):.1f}"])
        print(f"{peers} peers in place, {changes} changes one at a time; etcd write -> kernel object (ms)")
        print(table(rows, ["change", "n", "p50", "p90", "p99", "max"]))
        path = write_result("event_latency", {
            "peers": peers, "changes": changes, "agent_source": source, "target": "p50 <= 10 ms, p99 <= 50 ms",
            "p50_ms": percentile(allv, 50), "p90_ms": percentile(allv, 90), "p99_ms": percentile(allv, 99),
            "max_ms": max(allv), "by_kind": {k: {"p50_ms": percentile(v, 50), "p99_ms": percentile(v, 99)}
                                             for k, v in latencies.items()},
            "etcd_put_p50_ms": percentile(put_ms, 50)})
        print(f"wrote {path}")
    finally:
        stop.set()
        if agent:
            agent.stop()
        etcd.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--peers", type=int, default=1000)
    parser.add_argument("--changes", type=int, default=500)
    parser.add_argument("--agent-source", help="measure the agent of this checkout (another revision) instead")
    main(__file__, parser, lambda args: inner(args.peers, args.changes, args.agent_source))
