"""Pods and traffic in the lab: what the Flannel CNI plugin would set up, then pings and iperf3.

Per node: a ``cni0`` bridge holding FLANNEL_SUBNET's gateway (and FLANNEL_IPV6_SUBNET's), and
pod namespaces ``<node ns>p<k>`` with a veth into the bridge, addresses from the node's subnet,
the subnet file's MTU and a default route via the bridge.
"""

from __future__ import annotations

import bisect
import ipaddress
import json
import re
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from overlay_core.subnetfile import read
from overlay_core.testing.netns import add_namespace, delete_namespace, ip, nsexec

IPERF_SECONDS = 3
_REPLY = re.compile(r"\[(\d+\.\d+)\] .*icmp_seq=(\d+) .*time=([\d.]+) ms")
IPERF_PORT = 5201


@dataclass(frozen=True)
class Pod:
    name: str
    ns: str
    node: str
    ipv4: str = ""
    ipv6: str = ""

    def addresses(self) -> list[str]:
        return [a for a in (self.ipv4, self.ipv6) if a]


def add_pods(lab, node, count: int) -> list[Pod]:
    """Create ``count`` pods on ``node`` from its subnet file."""
    env = read(node.subnet_file)
    mtu = env.get("FLANNEL_MTU", "1500")
    gw4 = ipaddress.ip_interface(env["FLANNEL_SUBNET"]) if "FLANNEL_SUBNET" in env else None
    gw6 = ipaddress.ip_interface(env["FLANNEL_IPV6_SUBNET"]) if "FLANNEL_IPV6_SUBNET" in env else None
    if not node.pods:
        ip("link", "add", "cni0", "mtu", mtu, "type", "bridge", ns=node.ns)
        for gw in (gw4, gw6):
            if gw is not None:
                ip("addr", "add", str(gw), "dev", "cni0", *(["nodad"] if gw.version == 6 else []), ns=node.ns)
        ip("link", "set", "cni0", "up", ns=node.ns)
    pods = []
    for _ in range(count):
        k = len(node.pods) + 1
        ns = f"{node.ns}p{k}"
        add_namespace(ns)
        ip("link", "add", "eth0", "netns", ns, "mtu", mtu, "type", "veth", "peer", "name", f"veth{k}",
           "mtu", mtu, ns=node.ns)
        ip("link", "set", f"veth{k}", "master", "cni0", "up", ns=node.ns)
        ip("link", "set", "eth0", "up", ns=ns)
        addrs = []
        for gw in (gw4, gw6):
            if gw is None:
                addrs.append("")
                continue
            addr = gw.ip + k
            ip("addr", "add", f"{addr}/{gw.network.prefixlen}", "dev", "eth0",
               *(["nodad"] if gw.version == 6 else []), ns=ns)
            ip(*(["-6"] if gw.version == 6 else []), "route", "add", "default", "via", str(gw.ip), ns=ns)
            addrs.append(str(addr))
        node.pods.append(ns)
        pods.append(Pod(f"{node.name}p{k}", ns, node.name, addrs[0], addrs[1]))
    lab.save()
    return pods


def remove_pods(lab, node) -> None:
    """Delete ``node``'s pods and its ``cni0`` bridge (before re-creating them from a new subnet
    file, as a node that moved to another subnet needs)."""
    for ns in node.pods:
        delete_namespace(ns)
    ip("link", "del", "cni0", ns=node.ns, check=False)
    node.pods = []
    lab.save()


def pods_of(lab) -> list[Pod]:
    out = []
    for node in lab.state.nodes:
        env = read(node.subnet_file)
        gw4 = ipaddress.ip_interface(env["FLANNEL_SUBNET"]) if "FLANNEL_SUBNET" in env else None
        gw6 = ipaddress.ip_interface(env["FLANNEL_IPV6_SUBNET"]) if "FLANNEL_IPV6_SUBNET" in env else None
        for k, ns in enumerate(node.pods, start=1):
            out.append(Pod(f"{node.name}p{k}", ns, node.name, str(gw4.ip + k) if gw4 else "",
                           str(gw6.ip + k) if gw6 else ""))
    return out


def _ping_summary(output: str, count: int) -> tuple[int, int]:
    for line in output.splitlines():
        if "packets transmitted" in line:
            parts = line.split(",")
            return int(parts[0].split()[0]), int(parts[1].split()[0])
    return count, 0


def ping(ns: str, address: str, count: int = 3, interval: float = 0.2) -> tuple[int, int]:
    """``(sent, received)`` for a short bounded ping from ``ns``."""
    proc = nsexec(ns, "ping", "-n", "-q", "-c", str(count), "-i", str(interval), "-W", "1", address,
                  check=False, timeout=count * interval + 10)
    return _ping_summary(proc.stdout, count)


class BackgroundPing:
    """A ping of ``count`` packets every ``interval`` seconds from ``ns``, running while a test
    does something else (a fault). ``result()`` waits for the last reply and returns
    ``(sent, received)``; ``lost()`` then says when the unanswered packets were sent. A fixed
    count, never a signal, ends it, so no packet still in flight is counted as lost."""

    def __init__(self, ns: str, address: str, seconds: float, interval: float = 0.02) -> None:
        self.count = max(1, round(seconds / interval))
        self.seconds = seconds
        self.interval = interval
        self.output = ""
        self.started = time.time()
        self._out = tempfile.TemporaryFile("w+")  # a pipe would fill up and stall ping
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, "ping", "-n", "-D", "-c", str(self.count), "-i", str(interval),
             "-W", "1", address], stdout=self._out, stderr=subprocess.STDOUT)

    def result(self) -> tuple[int, int]:
        try:
            self.proc.wait(timeout=self.seconds * 1.5 + 20)
        except subprocess.TimeoutExpired:
            self.stop()
            return self.count, 0
        self._out.seek(0)
        self.output = self._out.read()
        return _ping_summary(self.output, self.count)

    def lost(self) -> list[float]:
        """Unix times at which the unanswered packets were sent (interpolated between the
        answered ones around them, whose send time is the reply's time minus its RTT)."""
        sent_at: dict[int, float] = {}
        for line in self.output.splitlines():
            match = _REPLY.match(line)
            if match and "DUP!" not in line:
                sent_at[int(match[2])] = float(match[1]) - float(match[3]) / 1000
        known = sorted(sent_at)
        times = []
        for seq in range(1, self.count + 1):
            if seq in sent_at:
                continue
            at = bisect.bisect(known, seq)
            if at:
                times.append(sent_at[known[at - 1]] + (seq - known[at - 1]) * self.interval)
            elif known:
                times.append(sent_at[known[0]] - (known[0] - seq) * self.interval)
            else:
                times.append(self.started + (seq - 1) * self.interval)
        return times

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._out.close()


def ping_matrix(lab, count: int = 3) -> dict[tuple[str, str], tuple[int, int]]:
    """Every pod pings every other pod's addresses (both families); results by (from, to)."""
    pods = pods_of(lab)
    jobs = [(src, dst, addr) for src in pods for dst in pods if src is not dst for addr in dst.addresses()]
    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(lambda j: ping(j[0].ns, j[2], count), jobs))
    matrix: dict[tuple[str, str], tuple[int, int]] = {}
    for (src, dst, _), (sent, got) in zip(jobs, results):
        old = matrix.get((src.name, dst.name), (0, 0))
        matrix[(src.name, dst.name)] = (old[0] + sent, old[1] + got)
    return matrix


def iperf(server_ns: str, client_ns: str, address: str, seconds: int = IPERF_SECONDS) -> float:
    """TCP throughput in Mbit/s from ``client_ns`` to ``address`` (a server started in
    ``server_ns`` for one test); bounded to ``seconds``."""
    server = subprocess.Popen(["ip", "netns", "exec", server_ns, "iperf3", "-s", "-1", "-p", str(IPERF_PORT)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.3)
        proc = nsexec(client_ns, "iperf3", "-c", address, "-p", str(IPERF_PORT), "-t", str(seconds), "-J",
                      check=False, timeout=seconds + 20)
        try:
            data = json.loads(proc.stdout)
            return data["end"]["sum_received"]["bits_per_second"] / 1e6
        except (ValueError, KeyError):
            return 0.0
    finally:
        server.kill()
        server.wait()


def bandwidth(lab, seconds: int = IPERF_SECONDS) -> dict[str, float]:
    """Pod→pod over the overlay next to node→node on the underlay (first two nodes)."""
    pods = [p for p in pods_of(lab) if p.node in ("n1", "n2")]
    a = next(p for p in pods if p.node == "n1")
    b = next(p for p in pods if p.node == "n2")
    n1, n2 = lab.node(1), lab.node(2)
    underlay = n2.ip if b.ipv4 else n2.ipv6
    return {
        "pod n1→n2 (overlay)": iperf(b.ns, a.ns, b.ipv4 or b.ipv6, seconds),
        "node n1→n2 (underlay)": iperf(n2.ns, n1.ns, underlay, seconds),
    }
