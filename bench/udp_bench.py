"""UDP backend data path: single-stream pod-to-pod TCP (iperf3) through the overlay-udp forwarder
(fast path and batch fallback) against kernel VXLAN programmed as Flannel does, between the same
namespaces in the same run, rounds interleaved; medians printed as JSON.

    sudo .venv/bin/python bench/udp_bench.py [--runs 3] [--secs 3] [--variants vxlan,udp-fast,udp-batch]
        [--baseline-src DIR]   # adds udp-fast-baseline: the forwarder of an older commit, same run
    .venv/bin/python bench/udp_bench.py --micro    # CPU per 64 KB of the fast path's packet surgery

``--micro`` needs no root and no namespaces: it times, in this process, cutting a 64 KB TCP
super-packet (46 segments of 1420 bytes, timestamps on) into segments with their checksums, and
joining the segments back (a UDP_GRO batch of 44, then one of 2, then the virtio-net header), as
the forwarder does per super-packet; best of several repetitions, so other tenants' load
inflates it less than the end-to-end figures.

Topology (namespaces ovu-bench-*, removed at the end, also on failure):
    pa[10.5.1.2] =veth= na[10.5.1.1 | eth0 192.0.2.1] =veth= nb[eth0 192.0.2.2 | 10.5.2.1] =veth= pb[10.5.2.2]
Pods get the path's MTU as a route MTU (VXLAN 1450, udp 1472). ``fwd_cpu`` is the CPU of both
forwarder processes (100 = one core), ``cpu_per_gbps`` that divided by the throughput;
``machine_busy`` is the whole machine (other tenants included) and ``machine_cpu_per_gbps`` that
in percent of one core per Gbit/s: the only CPU figure for VXLAN, whose work happens in softirq,
and an upper bound (iperf3 and other tenants are in it).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import struct
import subprocess
import sys
import time

from overlay_core.testing.netns import add_namespace, delete_namespace, ip, nsexec
from overlay_udp import control

PA, NA, NB, PB = (f"ovu-bench-{n}" for n in ("pa", "na", "nb", "pb"))
MTU = {"vxlan": 1450, "udp-fast": 1472, "udp-batch": 1472, "udp-fast-baseline": 1472}


def setup() -> None:
    for ns in (PA, NA, NB, PB):
        add_namespace(ns)
    ip("link", "add", "eth0", "netns", NA, "type", "veth", "peer", "name", "eth0", "netns", NB)
    for i, (pod, node) in enumerate(((PA, NA), (PB, NB)), start=1):
        ip("link", "add", "eth0", "netns", pod, "type", "veth", "peer", "name", "vpod", "netns", node)
        ip("addr", "add", f"192.0.2.{i}/24", "dev", "eth0", ns=node)
        ip("addr", "add", f"10.5.{i}.1/24", "dev", "vpod", ns=node)
        ip("addr", "add", f"10.5.{i}.2/24", "dev", "eth0", ns=pod)
        for ns, dev in ((node, "eth0"), (node, "vpod"), (pod, "eth0")):
            ip("link", "set", dev, "up", ns=ns)
        ip("route", "add", "default", "via", f"10.5.{i}.1", ns=pod)
        nsexec(node, "sysctl", "-qw", "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0")
        ip("link", "add", "flannel.1", "address", f"0a:58:0a:05:0{i}:01", "type", "vxlan", "id", "1", "local",
           f"192.0.2.{i}", "dev", "eth0", "dstport", "8472", "nolearning", ns=node)
        ip("link", "set", "flannel.1", "mtu", "1450", "up", ns=node)
        ip("addr", "add", f"10.5.{i}.0/32", "dev", "flannel.1", ns=node)
    for node, j in ((NA, 2), (NB, 1)):
        ip("neigh", "replace", f"10.5.{j}.0", "lladdr", f"0a:58:0a:05:0{j}:01", "dev", "flannel.1", "nud",
           "permanent", ns=node)
        subprocess.run(["bridge", "-n", node, "fdb", "append", f"0a:58:0a:05:0{j}:01", "dev", "flannel.1", "dst",
                        f"192.0.2.{j}", "self", "permanent"], check=True)


def pod_routes(mtu: int) -> None:
    ip("route", "replace", "10.5.2.0/24", "via", "10.5.1.1", "mtu", str(mtu), ns=PA)
    ip("route", "replace", "10.5.1.0/24", "via", "10.5.2.1", "mtu", str(mtu), ns=PB)


def vxlan_routes(on: bool) -> None:
    for node, j in ((NA, 2), (NB, 1)):
        if on:
            ip("route", "replace", f"10.5.{j}.0/24", "via", f"10.5.{j}.0", "dev", "flannel.1", "onlink", ns=node)
        else:
            ip("route", "del", f"10.5.{j}.0/24", ns=node, check=False)


def start_forwarders(path: str, tmp: str, src: str | None = None) -> list[subprocess.Popen]:
    """Both forwarders on ``path``; from the package source directory ``src`` instead of the
    installed one when given (a baseline version of the forwarder, in the same run)."""
    env = {**os.environ, "PYTHONPATH": src} if src else None
    procs = []
    for i, node, j in ((1, NA, 2), (2, NB, 1)):
        sock = f"{tmp}/ctl{i}.sock"
        argv = [sys.executable, "-m", "overlay_udp.forwarder", "--control", sock, "--network", "10.5.0.0/16",
                "--subnet", f"10.5.{i}.0/24", "--mtu", "1472", "--path", path, "--bind", f"192.0.2.{i}",
                "--route", f"10.5.{j}.0/24=192.0.2.{j}", "--state", f"{tmp}/routes{i}.json"]
        with open(f"{tmp}/fwd{i}.log", "ab") as log:
            procs.append(subprocess.Popen(["ip", "netns", "exec", node, *argv], stdout=log, stderr=subprocess.STDOUT,
                                          env=env))
        for _ in range(300):
            try:
                if control.call(sock, "ping")["path"] != path.replace("auto", "fast"):
                    raise SystemExit(f"forwarder {i} runs another path than {path}")
                break
            except control.ControlError:
                time.sleep(0.1)
    return procs


def stop_forwarders(procs: list[subprocess.Popen], tmp: str) -> None:
    for i, proc in enumerate(procs, start=1):
        try:
            control.call(f"{tmp}/ctl{i}.sock", "stop")
        except control.ControlError:
            proc.kill()
        proc.wait(10)


def ticks(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total


def busy() -> tuple[int, int]:
    with open("/proc/stat") as fh:
        v = [int(x) for x in fh.readline().split()[1:8]]
    return v[0] + v[1] + v[2] + v[5] + v[6], sum(v)


def measure(secs: int, pids: list[int]) -> dict:
    if nsexec(PA, "ping", "-c", "2", "-i", "0.2", "-W", "2", "10.5.2.2", check=False).returncode:
        return {"error": "ping failed"}
    c0, (b0, t0), w0 = ticks(pids), busy(), time.monotonic()
    out = nsexec(PA, "iperf3", "-c", "10.5.2.2", "-t", str(secs), "-J", timeout=secs + 30).stdout
    c1, (b1, t1), w1 = ticks(pids), busy(), time.monotonic()
    end = json.loads(out)["end"]
    gbps = end["sum_received"]["bits_per_second"] / 1e9
    fwd = 100 * (c1 - c0) / os.sysconf("SC_CLK_TCK") / (w1 - w0)
    return {"gbps": round(gbps, 3), "retransmits": end["sum_sent"].get("retransmits"),
            "fwd_cpu": round(fwd) if pids else None, "cpu_per_gbps": round(fwd / gbps) if pids and gbps else None,
            "machine_busy": round(100 * (b1 - b0) / max(t1 - t0, 1)),
            "machine_cpu_per_gbps": round(100 * (b1 - b0) / max(t1 - t0, 1) * (os.cpu_count() or 1) / gbps)
            if gbps else None}


def run(variants: list[str], runs: int, secs: int, tmp: str, baseline: str | None = None) -> dict:
    setup()
    server = subprocess.Popen(["ip", "netns", "exec", PB, "iperf3", "-s", "-B", "10.5.2.2"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rows: dict[str, list[dict]] = {v: [] for v in variants}
    try:
        time.sleep(0.5)
        for _ in range(runs):
            for v in variants:
                pod_routes(MTU[v])
                vxlan_routes(v == "vxlan")
                src = baseline if v.endswith("-baseline") else None
                procs = start_forwarders(v.split("-")[1], tmp, src) if v.startswith("udp") else []
                try:
                    rows[v].append(measure(secs, [p.pid for p in procs]))
                finally:
                    stop_forwarders(procs, tmp)
    finally:
        server.kill()
        server.wait(5)
    result: dict = {"runs": runs, "secs": secs, "cpus": os.cpu_count(), "kernel": os.uname().release,
                    "loadavg_at_end": os.getloadavg()[0], "variants": {}}
    vx = statistics.median(r["gbps"] for r in rows.get("vxlan", []) if "gbps" in r) if "vxlan" in rows else None
    for v, rs in rows.items():
        ok = [r for r in rs if "gbps" in r]
        med = statistics.median(r["gbps"] for r in ok) if ok else 0.0
        cpu = [r["fwd_cpu"] for r in ok if r["fwd_cpu"] is not None]
        per_gbps = [r["cpu_per_gbps"] for r in ok if r["cpu_per_gbps"] is not None]
        machine = [r["machine_cpu_per_gbps"] for r in ok if r["machine_cpu_per_gbps"] is not None]
        result["variants"][v] = {"gbps_median": med, "x_vxlan": round(med / vx, 3) if vx else None,
                                 "machine_cpu_per_gbps_median": statistics.median(machine) if machine else None,
                                 "fwd_cpu_median": statistics.median(cpu) if cpu else None,
                                 "cpu_per_gbps_median": statistics.median(per_gbps) if per_gbps else None,
                                 "runs": rs}
    return result


def micro(reps: int = 7, loops: int = 500) -> dict:
    """Microseconds per 64 KB super-packet of segment_tcp and of join_tcp + extend + header."""
    from overlay_udp.packet import ACK, PSH, join_tcp, segment_tcp
    mss = 1420
    payload = (bytes(range(256)) * 256)[:46 * mss]
    timestamps = bytes([1, 1, 8, 10, *[0] * 8])
    tcp = struct.pack("!HHIIBBHHH", 40000, 5201, 1000, 555, 8 << 4, ACK | PSH, 502, 0, 0) + timestamps
    packet = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp) + len(payload), 7, 0x4000, 64, 6, 0,
                                   bytes([10, 5, 1, 2]), bytes([10, 5, 2, 2])) + tcp + payload)
    segs = segment_tcp(packet, mss)
    wire = memoryview(bytes(segs.data))
    first, rest = wire[:44 * segs.size], wire[44 * segs.size:]

    def join() -> None:
        joined = join_tcp(first, segs.size)
        if joined is None or not joined.extend(rest, segs.size):
            raise SystemExit("micro: the segments did not join back")
        joined.vnet_and_header()

    out: dict = {"super_packet_bytes": len(packet), "segments": segs.count}
    for name, fn in (("segment_us", lambda: segment_tcp(packet, mss)), ("join_us", join)):
        best = float("inf")
        for _ in range(reps):
            t = time.perf_counter()
            for _ in range(loops):
                fn()
            best = min(best, (time.perf_counter() - t) / loops * 1e6)
        out[name] = round(best, 1)
    return {**out, "loadavg": os.getloadavg()[0]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--secs", type=int, default=3)
    ap.add_argument("--variants", default="vxlan,udp-fast,udp-batch")
    ap.add_argument("--micro", action="store_true", help="only the CPU cost of segmenting and joining 64 KB")
    ap.add_argument("--baseline-src", metavar="DIR",
                    help="also run the fast path from this overlay_udp source directory (variant udp-fast-baseline), "
                         "e.g. git archive OLD plugins/others/udp/src | tar -x -C /tmp/base")
    a = ap.parse_args()
    if a.micro:
        print(json.dumps(micro(), indent=1))
        return
    variants = a.variants.split(",")
    if a.baseline_src:
        variants.append("udp-fast-baseline")
    if unknown := set(variants) - set(MTU):
        ap.error(f"unknown variants {sorted(unknown)}; known: {sorted(MTU)}")
    tmp = f"/tmp/ovu-bench-{os.getpid()}"
    os.makedirs(tmp, exist_ok=True)
    try:
        print(json.dumps(run(variants, min(a.runs, 20), min(a.secs, 30), tmp, a.baseline_src), indent=1))
    finally:
        for ns in (PA, NA, NB, PB):
            delete_namespace(ns)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
