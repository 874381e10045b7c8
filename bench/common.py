"""Shared plumbing of the benchmarks: a namespace holding etcd (127.0.0.1), one agent and the
driver itself, fake peer leases, timing and CPU readings, result tables and JSON files.

Every benchmark re-executes itself inside a fresh namespace (``ovl-bench-<pid>``) that it
deletes at the end, also on failure; addresses are 192.0.2.0/24 and 10.0.0.0/8 inside it.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "bench", "results")
PREFIX = "/coreos.com/network"
NETWORK = "10.0.0.0/9"  # pod subnets; fake public IPs come from 10.128.0.0/9
HEALTH = 9471
INNER = "OVERLAY_BENCH_INNER"


def in_namespace(script: str, argv: list[str]) -> int:
    """Run ``script`` again inside a fresh namespace with eth0 (veth) and lo; clean up after."""
    ns = f"ovl-bench-{os.getpid()}"
    sh = lambda *a: subprocess.run(["ip", *a], check=True)  # noqa: E731
    sh("netns", "add", ns)
    try:
        sh("-n", ns, "link", "set", "lo", "up")
        sh("-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p")
        sh("-n", ns, "addr", "add", "192.0.2.1/24", "dev", "eth0")
        sh("-n", ns, "link", "set", "eth0", "up")
        sh("-n", ns, "link", "set", "eth0p", "up")
        env = {**os.environ, INNER: ns}
        return subprocess.run(["ip", "netns", "exec", ns, sys.executable, script, *argv], env=env).returncode
    finally:
        subprocess.run(["ip", "netns", "pids", ns], capture_output=True)
        for pid in subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split():
            try:
                os.kill(int(pid), 9)
            except ProcessLookupError:
                pass
        subprocess.run(["ip", "netns", "del", ns])


def main(script: str, parser, inner) -> None:
    """Parse the arguments; outside the namespace, re-run inside a fresh one; inside, run
    ``inner(args)``."""
    args = parser.parse_args()
    if os.environ.get(INNER):
        inner(args)
    else:
        raise SystemExit(in_namespace(script, sys.argv[1:]))


def fake_peer(i: int) -> tuple[str, str]:
    """Key name and Flannel-format value of fake VXLAN peer ``i`` (0-based)."""
    subnet = f"10.{(i + 1) // 256}.{(i + 1) % 256}.0"
    public = f"10.{128 + i // 65536}.{(i // 256) % 256}.{i % 256}"
    mac = f"0a:{(i >> 24) & 255:02x}:{(i >> 16) & 255:02x}:{(i >> 8) & 255:02x}:{i & 255:02x}:01"
    value = ('{"PublicIP":"%s","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"%s"}}'
             % (public, mac))
    return f"{subnet}-24", value


class Etcd:
    """etcd on 127.0.0.1 in the current namespace, with a pyetcd client."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="ovl-bench-etcd-")
        self.start()
        self.connect()

    def connect(self) -> None:
        import pyetcd

        endpoint = pyetcd.Endpoint("127.0.0.1", 2379, secure=False, time_retry=0.1)
        self.client = pyetcd.MultiEndpointEtcd3Client(endpoints=[endpoint], timeout=30)
        for _ in range(200):
            try:
                self.client.status()
                return
            except Exception:
                time.sleep(0.05)

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["etcd", "--data-dir", f"{self.dir}/data", "--listen-client-urls", "http://127.0.0.1:2379",
             "--advertise-client-urls", "http://127.0.0.1:2379", "--listen-peer-urls", "http://127.0.0.1:2380",
             "--log-level", "error", "--quota-backend-bytes", str(4 << 30)],
            stdout=subprocess.DEVNULL, stderr=open(f"{self.dir}/log", "a"))

    def config(self) -> None:
        self.client.put(f"{PREFIX}/config", json.dumps({"Network": NETWORK, "Backend": {"Type": "vxlan"}}))

    def load_peers(self, n: int, start: int = 0) -> None:
        c = self.client
        for base in range(start, start + n, 100):
            ops = [c.transactions.put(f"{PREFIX}/subnets/{k}", v)
                   for k, v in map(fake_peer, range(base, min(base + 100, start + n)))]
            c.transaction(compare=[], success=ops, failure=[])

    def range_count(self) -> int:
        """How many Range RPCs etcd has served (from its own /metrics)."""
        text = urllib.request.urlopen("http://127.0.0.1:2379/metrics", timeout=5).read().decode()
        return sum(int(float(line.rsplit(" ", 1)[1])) for line in text.splitlines()
                   if line.startswith("grpc_server_handled_total") and 'grpc_method="Range"' in line)

    def restart(self) -> None:
        """SIGKILL and start again on the same data (connections drop, data stays)."""
        self.proc.kill()
        self.proc.wait()
        self.start()
        self.connect()

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()
        subprocess.run(["rm", "-rf", self.dir])


@dataclass
class Agent:
    proc: subprocess.Popen
    started: float
    log: str

    @classmethod
    def start(cls, *extra: str, source: str | None = None) -> Agent:
        """Start an agent; ``source``: a checkout of another revision to run instead (its
        ``core/src`` and ``plugins/vxlan/src`` go first on the path), for same-run comparisons.
        Byte-code caching stays on, as in an installed package."""
        log = tempfile.mktemp(prefix="ovl-bench-agent-", suffix=".log")
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        if source:
            env["PYTHONPATH"] = f"{source}/core/src:{source}/plugins/vxlan/src"
        started = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-m", "overlay_core", "run", "--etcd-endpoints=http://127.0.0.1:2379",
             "--iface=eth0", f"--subnet-file={log}.env", f"--healthz-port={HEALTH}",
             "--healthz-ip=127.0.0.1", *extra], stdout=open(log, "w"), stderr=subprocess.STDOUT, env=env)
        return cls(proc, started, log)

    def get(self, path: str, accept: str = "") -> tuple[int, bytes]:
        headers = {"Accept": accept} if accept else {}
        request = urllib.request.Request(f"http://127.0.0.1:{HEALTH}{path}", headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=5) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, b""
        except OSError:
            return 0, b""

    def wait_ready(self, timeout: float = 300) -> float:
        """Seconds from process start to /readyz 200."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.get("/readyz")[0] == 200:
                return time.perf_counter() - self.started
            if self.proc.poll() is not None:
                raise RuntimeError(f"agent exited: {open(self.log).read()[-2000:]}")
            time.sleep(0.005)
        raise RuntimeError("agent not ready in time")

    def metric(self, name: str) -> float:
        _, body = self.get("/metrics")
        total = 0.0
        for line in body.decode().splitlines():
            if line.startswith(name) and not line.startswith("#"):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def cpu_seconds(self) -> float:
        with open(f"/proc/{self.proc.pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        tick = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])) / tick

    def rss_mb(self) -> float:
        with open(f"/proc/{self.proc.pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return 0.0

    def stop(self) -> float:
        """SIGTERM; returns seconds until the process was gone."""
        started = time.perf_counter()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        took = time.perf_counter() - started
        for path in (self.log, self.log + ".env"):
            if os.path.exists(path):
                os.unlink(path)
        return took


def kernel_counts(device: str = "flannel.1") -> tuple[int, int, int]:
    routes = subprocess.run(["ip", "route", "show", "proto", "79"], capture_output=True, text=True).stdout
    neigh = subprocess.run(["ip", "neigh", "show", "dev", device, "nud", "permanent"], capture_output=True,
                           text=True).stdout
    fdb = subprocess.run(["bridge", "fdb", "show", "dev", device], capture_output=True, text=True).stdout
    return (len(routes.splitlines()), len(neigh.splitlines()),
            sum(1 for line in fdb.splitlines() if " dst " in line))


def machine() -> dict:
    return {"python": platform.python_version(), "kernel": platform.release(), "cpus": os.cpu_count(),
            "cpu": next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                         if line.startswith("model name")), "?")}


def median(values):
    return statistics.median(values)


def write_result(name: str, data: dict) -> str:
    os.makedirs(RESULTS, exist_ok=True)
    path = os.path.join(RESULTS, f"{name}.json")
    with open(path, "w") as fh:
        json.dump({"benchmark": name, "machine": machine(), "when": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                   time.gmtime()), **data}, fh, indent=2)
    return path


def table(rows: list[list], header: list[str]) -> str:
    cells = [header] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    return "\n".join("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
                     for r in cells)


@contextmanager
def fresh_namespace(name: str):
    """A scratch namespace for a baseline; entered by running commands with ``ip -n``."""
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name])
