"""A lab of network namespaces with one private charon each, for tests and the benchmark.

Topology: a hub namespace with a bridge (the underlay, 192.0.2.0/24); node ``i`` (1-based) has
``eth0`` = 192.0.2.i on it, its pod subnet 10.1.i.0/24 and a pod address 10.1.i.1/32 on ``lo``.
Every namespace and charon the lab creates is removed by :meth:`IpsecLab.down` (charons killed
by the pid recorded at start, never by name).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import trio
from overlay_core import Lease, LeaseAttrs
from overlay_core.reconcile import diff, split

from .calc import KERNEL, LIBIPSEC, ConnSpec, Desired, desired_state
from .charon import CharonPaths, charon_argv, find_charon, vici_answers, write_config
from .options import IpsecOptions
from .target import CharonTarget, XfrmPolicyTarget
from .vici_client import ViciClient

LAB_NETWORK = IPv4Network("10.0.0.0/8")


@dataclass
class LabNode:
    index: int
    ns: str
    paths: CharonPaths
    pid: int | None = None
    log: Path | None = None

    @property
    def public_ip(self) -> IPv4Address:
        return IPv4Address(f"192.0.2.{self.index}")

    @property
    def subnet(self) -> IPv4Network:
        return IPv4Network(f"10.1.{self.index}.0/24")

    @property
    def pod_ip(self) -> str:
        return f"10.1.{self.index}.1"

    def lease(self) -> Lease:
        return Lease(self.subnet, None, LeaseAttrs(self.public_ip, backend_type="ipsec"))


def run(*argv: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=timeout)


@dataclass
class IpsecLab:
    base: Path
    count: int = 3
    prefix: str = "ipg"
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:4])
    nodes: list[LabNode] = field(default_factory=list)
    hub: str = ""
    network: IPv4Network = LAB_NETWORK

    def up(self) -> IpsecLab:
        self.hub = f"{self.prefix}-{self.tag}-hub"
        self._namespace(self.hub)
        run("ip", "-n", self.hub, "link", "add", "br0", "type", "bridge")
        run("ip", "-n", self.hub, "link", "set", "br0", "up")
        for i in range(1, self.count + 1):
            node = LabNode(i, f"{self.prefix}-{self.tag}-n{i}", CharonPaths.under(self.base / f"n{i}"))
            self.nodes.append(node)
            self._namespace(node.ns)
            port = f"v{self.tag}{i}"
            run("ip", "link", "add", port, "netns", self.hub, "type", "veth", "peer", "name", "eth0", "netns", node.ns)
            run("ip", "-n", self.hub, "link", "set", port, "master", "br0", "up")
            run("ip", "-n", node.ns, "addr", "add", f"{node.public_ip}/24", "dev", "eth0")
            run("ip", "-n", node.ns, "link", "set", "eth0", "up")
            run("ip", "-n", node.ns, "addr", "add", f"{node.pod_ip}/32", "dev", "lo")
        return self

    def _namespace(self, name: str) -> None:
        run("ip", "netns", "add", name)
        run("ip", "-n", name, "link", "set", "lo", "up")

    def start_charon(self, node: LabNode, mode: str = LIBIPSEC, timeout: float = 20) -> int:
        """Start charon in the node's namespace with our config and argv; wait until VICI answers."""
        write_config(node.paths, mode)
        node.log = node.paths.dir / "stdout.log"
        with open(node.log, "ab") as out:
            proc = subprocess.Popen(["ip", "netns", "exec", node.ns, *charon_argv(find_charon(), node.paths)],
                                    stdout=out, stderr=out, stdin=subprocess.DEVNULL, start_new_session=True)
        node.pid = proc.pid  # ip netns exec, unshare and sh all exec: this is charon
        deadline = time.monotonic() + timeout
        while not vici_answers(node.paths.vici):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"charon in {node.ns} did not come up: {node.log.read_text()[-500:]}")
            time.sleep(0.2)
        return proc.pid

    def kill_charon(self, node: LabNode, sig: int = signal.SIGTERM, timeout: float = 10) -> None:
        if node.pid is None:
            return
        try:
            os.kill(node.pid, sig)
        except ProcessLookupError:
            node.pid = None
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                done, _ = os.waitpid(node.pid, os.WNOHANG)
            except ChildProcessError:  # not our child (bench starts it elsewhere): poll for the pid
                done = 0 if os.path.exists(f"/proc/{node.pid}") else node.pid
            if done:
                break
            time.sleep(0.1)
        else:
            os.kill(node.pid, signal.SIGKILL)
            os.waitpid(node.pid, 0)
        node.pid = None

    def ping(self, src: LabNode, dst: LabNode, count: int = 2, size: int = 56) -> bool:
        """Pod to pod ping; a ``size`` other than the default is sent with Don't Fragment."""
        df = ["-M", "do", "-s", str(size)] if size != 56 else []
        done = run("ip", "netns", "exec", src.ns, "ping", "-c", str(count), "-i", "0.2", "-W", "2", *df,
                   "-I", src.pod_ip, dst.pod_ip, check=False)
        return done.returncode == 0

    def down(self) -> None:
        for node in self.nodes:
            self.kill_charon(node)
        for name in [n.ns for n in self.nodes] + ([self.hub] if self.hub else []):
            run("ip", "netns", "del", name, check=False)


class LabAgent:
    """The charon side of the Backend for one lab node, driven from a test: desired state from
    leases, converge of the charon (and, in kernel mode, xfrm policy) targets. Kernel routes are
    left out: this process runs in the root namespace."""

    def __init__(self, node: LabNode, peers: list[LabNode], options: IpsecOptions,
                 network: IPv4Network = LAB_NETWORK, mode: str = LIBIPSEC) -> None:
        self.node, self.peers, self.options, self.network, self.mode = node, list(peers), options, network, mode
        self.client = ViciClient(node.paths.vici)
        self.target = CharonTarget(self.client)
        self.policies = XfrmPolicyTarget(network, ip=("ip", "-n", node.ns)) if mode == KERNEL else None

    def desired(self) -> Desired:
        return desired_state(self.node.lease(), [p.lease() for p in self.peers], self.options, self.mode,
                             self.network)

    async def converge(self) -> tuple[int, int, int]:
        """Converge the xfrm policies (kernel mode) and charon as core's ``converge`` does, and
        also count failures: (set, deleted, failed) over both targets."""
        targets = [t for t in (self.policies, self.target) if t is not None]
        counts = [0, 0, 0]
        for target, share in zip(targets, split(self.desired().objects, targets)):
            to_set, to_delete = diff(share, await target.dump(), target.owns)
            failed = await target.apply(to_set, to_delete) if to_set or to_delete else 0
            for i, n in enumerate((len(to_set), len(to_delete), failed)):
                counts[i] += n
        return counts[0], counts[1], counts[2]

    async def states(self) -> dict[str, str]:
        """SA state per desired connection, from a fresh dump."""
        await self.target.dump()
        conns = [o for o in self.desired().objects if isinstance(o, ConnSpec)]
        return {c.name: self.target.peer_status(c).state for c in conns}


async def until_established(agents: list[LabAgent], timeout: float = 30, every: float = 1.0) -> int:
    """Converge every agent until all their connections are established; passes used."""
    passes = 0
    with trio.fail_after(timeout):
        while True:
            passes += 1
            for agent in agents:
                await agent.converge()
            states = [s for agent in agents for s in (await agent.states()).values()]
            if all(s == "established" for s in states):
                return passes
            await trio.sleep(every)
