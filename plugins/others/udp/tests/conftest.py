"""A udp overlay lab in namespaces named udt-<pid>x<n>-*: nodes on a bridge underlay (192.0.2.0/24),
a pod namespace behind each node (10.5.<i>.2), one forwarder process per node.

Everything the fixture created (namespaces, processes) is removed when the test ends, pass or fail,
and namespaces of an earlier run that was killed outright are removed at session start.
"""

from __future__ import annotations

import itertools
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from overlay_core.testing.netns import add_namespace, delete_namespace, ip, list_namespaces, nsexec
from overlay_udp import control

NETWORK = "10.5.0.0/16"
TUN_MTU = 1472
_counter = itertools.count()
_STALE = re.compile(r"udt-(\d+)x\d+-")


@pytest.fixture(scope="session", autouse=True)
def _stale_udt_namespaces():
    for ns in list_namespaces("udt-"):
        m = _STALE.match(ns)
        if m and int(m.group(1)) != os.getpid() and not os.path.exists(f"/proc/{m.group(1)}"):
            delete_namespace(ns)


def subnet(i: int) -> str:
    return f"10.5.{i}.0/24"


def pod_ip(i: int) -> str:
    return f"10.5.{i}.2"


def node_ip(i: int) -> str:
    return f"192.0.2.{i}"


class UdpLab:
    TUN_MTU = TUN_MTU
    subnet, pod_ip, node_ip = staticmethod(subnet), staticmethod(pod_ip), staticmethod(node_ip)

    def __init__(self, tmp: Path) -> None:
        self.tag = f"udt-{os.getpid()}x{next(_counter)}"
        self.tmp = tmp
        self.namespaces: list[str] = []
        self.procs: list[subprocess.Popen] = []
        self.underlay = self._ns("ul")
        ip("link", "add", "br0", "type", "bridge", ns=self.underlay)
        ip("link", "set", "br0", "up", ns=self.underlay)

    def _ns(self, name: str) -> str:
        ns = f"{self.tag}-{name}"
        add_namespace(ns)
        self.namespaces.append(ns)
        return ns

    def node(self, i: int) -> str:
        return f"{self.tag}-n{i}"

    def pod(self, i: int) -> str:
        return f"{self.tag}-p{i}"

    def add_node(self, i: int, pod: bool = True) -> str:
        """Node i: eth0 192.0.2.i on the bridge; with ``pod``, a pod 10.5.i.2 behind vpod 10.5.i.1."""
        n = self._ns(f"n{i}")
        ip("link", "add", "eth0", "netns", n, "type", "veth", "peer", "name", f"ul{i}", "netns", self.underlay)
        ip("link", "set", f"ul{i}", "master", "br0", "up", ns=self.underlay)
        ip("addr", "add", f"{node_ip(i)}/24", "dev", "eth0", ns=n)
        ip("link", "set", "eth0", "up", ns=n)
        nsexec(n, "sysctl", "-qw", "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0")
        if pod:
            p = self._ns(f"p{i}")
            ip("link", "add", "eth0", "netns", p, "mtu", str(TUN_MTU), "type", "veth", "peer", "name", "vpod",
               "netns", n, "mtu", str(TUN_MTU))
            ip("addr", "add", f"10.5.{i}.1/24", "dev", "vpod", ns=n)
            ip("link", "set", "vpod", "up", ns=n)
            ip("addr", "add", f"{pod_ip(i)}/24", "dev", "eth0", ns=p)
            ip("link", "set", "eth0", "up", ns=p)
            ip("route", "add", "default", "via", f"10.5.{i}.1", ns=p)
        return n

    def control(self, i: int) -> str:
        return str(self.tmp / f"ctl-n{i}.sock")

    def spawn(self, ns: str, argv: list[str], log: str, new_session: bool = True) -> subprocess.Popen:
        with open(self.tmp / log, "ab") as out:
            proc = subprocess.Popen(["ip", "netns", "exec", ns, *argv], stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=new_session)
        self.procs.append(proc)
        return proc

    def forwarder_argv(self, i: int, routes: dict[int, int] | None = None, path: str = "auto",
                       takeover: bool = False) -> list[str]:
        argv = [sys.executable, "-m", "overlay_udp.forwarder", "--control", self.control(i), "--network", NETWORK,
                "--subnet", subnet(i), "--mtu", str(TUN_MTU), "--path", path, "--bind", node_ip(i)]
        for peer_subnet, peer_node in (routes or {}).items():
            argv += ["--route", f"{subnet(peer_subnet)}={node_ip(peer_node)}"]
        return argv + (["--takeover"] if takeover else [])

    def start_forwarder(self, i: int, routes: dict[int, int] | None = None, path: str = "auto",
                        takeover: bool = False) -> subprocess.Popen:
        proc = self.spawn(self.node(i), self.forwarder_argv(i, routes, path, takeover), f"fwd-n{i}.log")
        self.wait_ready(i, proc)
        return proc

    def wait_ready(self, i: int, proc: subprocess.Popen | None = None, timeout: float = 30.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            try:
                return control.call(self.control(i), "ping", timeout=2.0)
            except (control.ControlError, OSError):
                if proc is not None and proc.poll() is not None:
                    raise AssertionError(f"forwarder n{i} exited: {self.log(f'fwd-n{i}.log')}") from None
                if time.monotonic() > deadline:
                    raise AssertionError(f"forwarder n{i} not ready: {self.log(f'fwd-n{i}.log')}") from None
                time.sleep(0.1)

    def log(self, name: str) -> str:
        try:
            return (self.tmp / name).read_text()[-3000:]
        except FileNotFoundError:
            return ""

    def ping(self, src_pod: int, dst: str, count: int = 3, interval: float = 0.2) -> subprocess.CompletedProcess:
        return nsexec(self.pod(src_pod), "ping", "-c", str(count), "-i", str(interval), "-W", "2", dst,
                      check=False, timeout=30)

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        for ns in reversed(self.namespaces):
            delete_namespace(ns)


@pytest.fixture
def udp_lab(tmp_path):
    labs: list[UdpLab] = []

    def make() -> UdpLab:
        lab = UdpLab(tmp_path)
        labs.append(lab)
        return lab

    yield make
    for lab in labs:
        lab.close()
