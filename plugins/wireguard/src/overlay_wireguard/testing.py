"""Namespaces with wireguard-go nodes configured only through this package (tests and bench).

A switch namespace holds a bridge; every node namespace hangs on it with ``eth0``
(192.0.2.N/24, 2001:db8:ff::N/64), runs one wireguard-go per device with its own socket
directory, and has the first address of its pod subnet (10.5.N.0/24, 2001:db8:10:N::/64) on
``lo`` as a pod stand-in. Peers come from lease values through ``calc``, are applied through the
reconcile target (UAPI), addresses and routes from ``calc.device_layouts`` through ``ip``.
``close()`` removes every process and namespace it made, also after a failure.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_network
from pathlib import Path

import trio
from overlay_core import Lease, LeaseAttrs, lease_from_kv, make_subnet_key, reconcile
from overlay_core.testing.netns import add_namespace, connect, delete_namespace, ip, nsexec

from .calc import Local, desired_peers, device_layouts, devices, lease_data
from .keys import KeyPair
from .options import WgOptions, device_mtu
from .peer import DeviceConfig
from .target import WireguardDeviceTarget
from .userspace import WireguardGo

NETWORK = ip_network("10.5.0.0/16")
NETWORK6 = ip_network("2001:db8:10::/56")


@dataclass
class NetNode:
    name: str
    ns: str
    index: int
    local: Local
    keys: KeyPair
    sockdir: Path
    subnet: IPv4Network | None
    subnet6: IPv6Network | None
    instances: dict[str, WireguardGo] = field(default_factory=dict)
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def pod(self) -> str:
        return str(self.subnet.network_address + 1) if self.subnet else ""

    @property
    def pod6(self) -> str:
        return str(self.subnet6.network_address + 1) if self.subnet6 else ""

    def lease(self) -> Lease:
        """The lease this node would write, through the store encoding and back."""
        d4, d6 = lease_data(self.local, self.keys.public)
        attrs = LeaseAttrs(self.local.public_ip or IPv4Address("0.0.0.0"), self.local.public_ipv6, "wireguard", d4, d6)
        return lease_from_kv(make_subnet_key(self.subnet, self.subnet6), attrs.to_json(), self.index, 1)


class WgNet:
    def __init__(self, prefix: str, workdir: Path) -> None:
        self.prefix = prefix
        self.workdir = workdir
        self.switch = f"{prefix}-sw"
        self.nodes: list[NetNode] = []
        self.procs: list[subprocess.Popen] = []
        self._namespaces: list[str] = []

    def __enter__(self) -> WgNet:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _add_ns(self, ns: str) -> None:
        self._namespaces.append(ns)
        add_namespace(ns)

    def add_node(self, index: int, options: WgOptions, ipv4: bool = True, ipv6: bool = False) -> NetNode:
        if not self.nodes:
            self._add_ns(self.switch)
            ip("link", "add", "br0", "type", "bridge", ns=self.switch)
            ip("link", "set", "br0", "up", ns=self.switch)
        ns = f"{self.prefix}-n{index}"
        self._add_ns(ns)
        connect(ns, "eth0", self.switch, f"p{index}")
        ip("link", "set", f"p{index}", "master", "br0", ns=self.switch)
        ip("addr", "add", f"192.0.2.{index}/24", "dev", "eth0", ns=ns)
        ip("addr", "add", f"2001:db8:ff::{index}/64", "dev", "eth0", "nodad", ns=ns)
        keys = KeyPair.generate()
        local = Local(options, ipv4, ipv6, IPv4Address(f"192.0.2.{index}"),
                      IPv6Address(f"2001:db8:ff::{index}") if ipv6 else None, keys.public)
        node = NetNode(f"n{index}", ns, index, local, keys, self.workdir / f"n{index}-sock",
                       ip_network(f"10.5.{index}.0/24") if ipv4 else None,
                       ip_network(f"2001:db8:10:{index:x}::/64") if ipv6 else None)
        if node.subnet:  # no dummy module on every machine: pod addresses on lo
            ip("addr", "add", f"{node.pod}/32", "dev", "lo", ns=ns)
        if node.subnet6:
            ip("addr", "add", f"{node.pod6}/128", "dev", "lo", ns=ns)
        for dev in devices(local):
            node.instances[dev.name] = WireguardGo(dev.name, node.sockdir)
        self.nodes.append(node)
        return node

    async def start(self, node: NetNode, device: str | None = None, timeout: float = 20.0) -> None:
        """Start wireguard-go (all devices of the node, or one) and wait until its UAPI answers."""
        for name, inst in node.instances.items():
            if device not in (None, name):
                continue
            inst.prepare()
            log = open(self.workdir / f"{node.name}-{name}.log", "ab")
            proc = subprocess.Popen(["ip", "netns", "exec", node.ns, *inst.argv()], stdin=subprocess.DEVNULL,
                                    stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **inst.env},
                                    start_new_session=True)
            log.close()
            node.procs[name] = proc
            self.procs.append(proc)
            with trio.fail_after(timeout):
                while not await inst.ready():
                    if proc.poll() is not None:
                        raise RuntimeError(f"wireguard-go for {node.name}/{name} exited with {proc.returncode}")
                    await trio.sleep(0.05)

    async def configure(self, node: NetNode, leases: list[Lease]) -> None:
        """What the backend will do: converge each device's peers from the leases, then put
        the addresses, routes and MTU of ``calc.device_layouts`` on the devices."""
        want = desired_peers(node.local, leases, own_key=node.lease().key)
        for dev in devices(node.local):
            target = WireguardDeviceTarget(node.instances[dev.name].client())
            desired = [DeviceConfig(node.keys.private, dev.port, dev.name), *want.peers[dev.name].values()]
            to_set, to_delete = reconcile.diff(desired, await target.dump(), target.owns)
            failed = await target.apply(to_set, to_delete)
            assert failed == 0, f"{node.name}/{dev.name}: {failed} changes failed"
        mtu = device_mtu(node.local.options, 1500, node.local.ipv6)
        for layout in device_layouts(node.local, node.lease(), NETWORK if node.local.ipv4 else None,
                                     NETWORK6 if node.local.ipv6 else None, mtu):
            cmds = [["link", "set", layout.name, "mtu", str(layout.mtu), "up"]]
            cmds += [["addr", "replace", str(a), "dev", layout.name] + (["nodad"] if a.version == 6 else [])
                     for a in layout.addresses]
            cmds += [["-6" if r.version == 6 else "-4", "route", "replace", str(r), "dev", layout.name, "scope", "link"]
                     for r in layout.routes]
            for cmd in cmds:
                await trio.run_process(["ip", "-n", node.ns, *cmd], capture_stdout=True, capture_stderr=True)

    async def configure_all(self) -> None:
        leases = [n.lease() for n in self.nodes]
        for node in self.nodes:
            await self.configure(node, leases)

    def kill(self, node: NetNode, device: str) -> None:
        proc = node.procs.pop(device)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    pass
        for ns in reversed(self._namespaces):
            delete_namespace(ns)
        self._namespaces.clear()


def ping(ns: str, dst: str, src: str, count: int = 3, interval: float = 0.2) -> tuple[int, int]:
    """``(sent, received)`` of a bounded ping from ``src`` in ``ns``."""
    proc = nsexec(ns, "ping", "-n", "-q", "-c", str(count), "-i", str(interval), "-W", "2", "-I", src, dst,
                  check=False, timeout=count * interval + 15)
    for line in proc.stdout.splitlines():
        if "packets transmitted" in line:
            parts = line.split(",")
            return int(parts[0].split()[0]), int(parts[1].split()[0])
    return count, 0


def wait_ping(ns: str, dst: str, src: str, timeout: float = 20.0) -> bool:
    """True once one ping gets through (the first handshake takes a moment), bounded."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ping(ns, dst, src, count=1)[1] == 1:
            return True
    return False
