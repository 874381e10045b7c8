"""The lab: namespaces, links, etcd and agents, recorded in a state file so ``down`` finds them.

Layout (every address inside the lab's namespaces, none in the root namespace):

    ovl-<name>-sw     bridge br0: the underlay switch
    ovl-<name>-etcd   eth0 192.0.2.100/24, etcd on :2379
    ovl-<name>-etcd<k> eth0 192.0.2.(99+k)/24: member k (2..5) of an etcd cluster
    ovl-<name>-n<i>   eth0 192.0.2.<i>/24, one agent each (health on :9471)
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Network

from overlay_core.errors import OverlayError
from overlay_core.testing.etcdserver import EtcdServer
from overlay_core.testing.netns import (
    NetnsError,
    add_namespace,
    connect,
    delete_namespace,
    http_get,
    ip,
    list_namespaces,
    nsexec,
)

from .support import call, lab_support

STATE_ROOT = "/run/overlay-lab"
UNDERLAY = IPv4Network("192.0.2.0/24")
REMOTE_UNDERLAY = IPv4Network("198.51.100.0/24")  # a second L2 segment, behind a router
UNDERLAY_V6 = IPv6Network("2001:db8::/64")
REMOTE_UNDERLAY_V6 = IPv6Network("2001:db8:1::/64")
POD_NETWORK_V6 = "2001:db8:10::/48"
ETCD_IP = IPv4Address("192.0.2.100")
ROUTER_HOST = 254
HEALTH_PORT = 9471
PREFIX = "/coreos.com/network"
ETCD_CLIENT_PORT = 2379
CUT_TABLE = "lab_etcd_cut"  # nft table (inet) of a node cut off from etcd


@dataclass
class LabNode:
    name: str
    ns: str
    ip: str
    subnet_file: str
    log: str
    pid: int = 0
    ipv6: str = ""
    segment: int = 0
    pods: list[str] = field(default_factory=list)


@dataclass
class LabState:
    name: str
    backend: str = ""
    config: dict = field(default_factory=dict)
    etcd_pid: int = 0
    etcd_members: int = 1
    etcd_pids: list[int] = field(default_factory=list)  # every member's (etcd_pid: the first one's)
    ipv6: bool = False
    segments: int = 1
    nodes: list[LabNode] = field(default_factory=list)


class Lab:
    def __init__(self, name: str = "lab", state_root: str = STATE_ROOT,
                 env: dict[str, str] | None = None) -> None:
        if not name.replace("-", "").isalnum() or len(name) > 20:
            raise OverlayError(f"lab name {name!r}: use up to 20 letters, digits or dashes")
        self.name = name
        self.env = env or {}
        self.dir = os.path.join(state_root, name)
        self.prefix = f"ovl-{name}-"
        self.switch = f"{self.prefix}sw"
        self.etcd_ns = f"{self.prefix}etcd"
        self.state = LabState(name)
        self.etcd = EtcdServer(os.path.join(self.dir, "etcd-data"), str(ETCD_IP), netns=self.etcd_ns)
        self.support: object = None
        self.etcds = [self.etcd]

    # -- state file ------------------------------------------------------------------------

    @property
    def state_file(self) -> str:
        return os.path.join(self.dir, "state.json")

    def save(self) -> None:
        os.makedirs(self.dir, exist_ok=True)
        with open(self.state_file + ".tmp", "w") as fh:
            json.dump(asdict(self.state), fh, indent=2)
        os.replace(self.state_file + ".tmp", self.state_file)

    def load(self) -> bool:
        try:
            with open(self.state_file) as fh:
                data = json.load(fh)
        except (OSError, ValueError):
            return False
        nodes = [LabNode(**n) for n in data.pop("nodes", [])]
        self.state = LabState(**data, nodes=nodes)
        if len(self.etcds) != self.state.etcd_members:
            self._plan_etcd(self.state.etcd_members)
        return True

    # -- building --------------------------------------------------------------------------

    def _segment(self, segment: int) -> tuple[str, IPv4Network, IPv6Network]:
        if segment == 0:
            return "br0", UNDERLAY, UNDERLAY_V6
        return "br1", REMOTE_UNDERLAY, REMOTE_UNDERLAY_V6

    def _host(self, ns: str, port: str, host: int, segment: int = 0) -> tuple[str, str]:
        """A namespace wired to a segment's bridge; returns its IPv4 and (lab with IPv6) IPv6."""
        bridge, net4, net6 = self._segment(segment)
        add_namespace(ns)
        connect(ns, "eth0", self.switch, port)
        ip("link", "set", port, "master", bridge, ns=self.switch)
        v4 = str(net4.network_address + host)
        ip("addr", "add", f"{v4}/{net4.prefixlen}", "dev", "eth0", ns=ns)
        v6 = ""
        if self.state.ipv6:
            v6 = str(net6.network_address + host)
            ip("addr", "add", f"{v6}/{net6.prefixlen}", "dev", "eth0", "nodad", ns=ns)
        if self.state.segments > 1 and host != ROUTER_HOST:
            ip("route", "add", "default", "via", str(net4.network_address + ROUTER_HOST), ns=ns)
            if self.state.ipv6:
                ip("-6", "route", "add", "default", "via", str(net6.network_address + ROUTER_HOST), ns=ns)
        return v4, v6

    def _router(self) -> None:
        """A router namespace joining the two segments (lab with --remote-nodes)."""
        ns = f"{self.prefix}rt"
        add_namespace(ns)
        for segment, port in ((0, "rt0"), (1, "rt1")):
            bridge, net4, net6 = self._segment(segment)
            dev = f"eth{segment}"
            connect(ns, dev, self.switch, port)
            ip("link", "set", port, "master", bridge, ns=self.switch)
            ip("addr", "add", f"{net4.network_address + ROUTER_HOST}/{net4.prefixlen}", "dev", dev, ns=ns)
            if self.state.ipv6:
                ip("addr", "add", f"{net6.network_address + ROUTER_HOST}/{net6.prefixlen}", "dev", dev,
                   "nodad", ns=ns)

    def node(self, index: int) -> LabNode:
        return self.state.nodes[index - 1]

    def add_node(self, segment: int = 0) -> LabNode:
        index = len(self.state.nodes) + 1
        name = f"n{index}"
        ns = f"{self.prefix}{name}"
        node = LabNode(name, ns, "", os.path.join(self.dir, name, "subnet.env"),
                       os.path.join(self.dir, name, "agent.log"), segment=segment)
        os.makedirs(os.path.dirname(node.log), exist_ok=True)
        node.ip, node.ipv6 = self._host(ns, name, index, segment)
        self.state.nodes.append(node)
        self.save()
        return node

    def _plan_etcd(self, members: int) -> None:
        """The etcd member(s): one (``self.etcd``), or a cluster of ``members``, one namespace each."""
        if members == 1:
            self.etcds = [self.etcd]
            return
        self.etcds = [
            EtcdServer(os.path.join(self.dir, f"etcd{k}-data"), str(ETCD_IP + k - 1), netns=self.member_ns(k),
                       name=f"m{k}")
            for k in range(1, members + 1)
        ]
        cluster = ",".join(f"{m.name}={m.peer_url}" for m in self.etcds)
        for member in self.etcds:
            member.initial_cluster = cluster
        self.etcd = self.etcds[0]

    def member_ns(self, k: int) -> str:
        """Namespace of etcd member ``k`` (1-based)."""
        return self.etcd_ns if k == 1 else f"{self.etcd_ns}{k}"

    @property
    def etcd_endpoints(self) -> str:
        return ",".join(m.url for m in self.etcds)

    def _start_etcd(self) -> None:
        for k, member in enumerate(self.etcds, start=1):
            suffix = "" if len(self.etcds) == 1 else str(k)
            member.start(os.path.join(self.dir, f"etcd{suffix}.log"), wait=False)
        for member in self.etcds:
            member.wait_ready(20.0)
        self.state.etcd_pids = [m.process.pid for m in self.etcds if m.process]
        self.state.etcd_pid = self.state.etcd_pids[0]
        if len(self.etcds) > 1:  # a cluster serves once it has a leader
            deadline = time.monotonic() + 30
            while nsexec(*self._etcdctl_cmd("endpoint", "health"), check=False).returncode != 0:
                if time.monotonic() > deadline:
                    raise OverlayError(f"the etcd cluster did not become healthy; see {self.dir}/etcd*.log")
                time.sleep(0.2)

    def _etcdctl_cmd(self, *args: str, endpoints: str = "") -> list[str]:
        return [self.etcd_ns, "env", "ETCDCTL_API=3", "etcdctl", f"--endpoints={endpoints or self.etcd_endpoints}",
                *args]

    def etcdctl(self, *args: str, endpoints: str = "") -> str:
        """Run etcdctl against every member (or ``endpoints``, e.g. the live ones of a cluster)."""
        return nsexec(*self._etcdctl_cmd(*args, endpoints=endpoints)).stdout

    def cut_etcd(self, node: LabNode) -> None:
        """Black-hole every etcd member for ``node``: its etcd packets are dropped both ways (no
        RST, no ICMP), as a partition or a silent firewall would. Undone by ``heal_etcd``."""
        members = ", ".join(m.host for m in self.etcds)
        script = (
            f"table inet {CUT_TABLE} {{\n"
            f" chain out {{ type filter hook output priority 0; ip daddr {{ {members} }} "
            f"tcp dport {ETCD_CLIENT_PORT} drop; }}\n"
            f" chain in {{ type filter hook input priority 0; ip saddr {{ {members} }} "
            f"tcp sport {ETCD_CLIENT_PORT} drop; }}\n}}\n"
        )
        nsexec(node.ns, "nft", "-f", "-", input=script)

    def heal_etcd(self, node: LabNode) -> None:
        nsexec(node.ns, "nft", "delete", "table", "inet", CUT_TABLE, check=False)

    def write_config(self, config: dict) -> None:
        self.state.config = config
        self.state.backend = str(config.get("Backend", {}).get("Type", "vxlan"))
        self.etcdctl("put", f"{PREFIX}/config", json.dumps(config))
        self.save()

    def start_agent(self, node: LabNode, *extra: str, env: dict[str, str] | None = None) -> None:
        cmd = [
            "ip", "netns", "exec", node.ns, sys.executable, "-m", "overlay_core", "run",
            f"--etcd-endpoints={self.etcd_endpoints}",
            *([] if any(a.startswith("--iface") for a in extra) else ["--iface=eth0"]),
            f"--subnet-file={node.subnet_file}", f"--healthz-port={HEALTH_PORT}",
            f"--state-dir={os.path.join(os.path.dirname(node.subnet_file), 'state')}",
            "--healthz-ip=0.0.0.0", *extra,
        ]
        extras = call(self._support(), "node_env", self, node, default={})
        with open(node.log, "ab") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                    start_new_session=True,
                                    env={**os.environ, **extras, **self.env, **(env or {})})
        node.pid = proc.pid
        self.save()

    def _support(self):
        """The backend's lab extras (``lab.support``), loaded once per lab."""
        if self.support is None:
            self.support = lab_support(self.state.backend or "vxlan")
        return self.support

    def node_dir(self, node: LabNode) -> str:
        """The node's own directory on the host (subnet file, state dir, logs)."""
        return os.path.dirname(node.subnet_file)

    def stop_agent(self, node: LabNode, sig: int = 15, timeout: float = 5.0) -> int | None:
        """Signal a node's agent and wait for it; returns its exit status (None if not running)."""
        if not node.pid:
            return None
        try:
            os.kill(node.pid, sig)
        except ProcessLookupError:
            node.pid = 0
            return None
        return self.wait_exit(node, timeout)

    def wait_exit(self, node: LabNode, timeout: float) -> int | None:
        """Wait for a node's agent to exit; its exit status, or None if still running."""
        deadline = time.monotonic() + timeout
        while True:
            done, raw = os.waitpid(node.pid, os.WNOHANG)
            if done:
                node.pid = 0
                self.save()
                return os.waitstatus_to_exitcode(raw)
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.02)

    def readyz(self, node: LabNode) -> tuple[int, dict]:
        try:
            status, body = http_get(node.ns, "127.0.0.1", HEALTH_PORT, "/readyz?verbose")
            return status, json.loads(body or b"{}")
        except (OSError, ValueError):
            return 0, {}

    def wait_ready(self, nodes: list[LabNode] | None = None, timeout: float = 60.0) -> None:
        pending = list(nodes or self.state.nodes)
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            for node in list(pending):
                if self.readyz(node)[0] == 200:
                    pending.remove(node)
                elif node.pid and _exited(node.pid):
                    raise OverlayError(f"agent on {node.name} exited; last log lines:\n{_tail(node.log)}")
            time.sleep(0.1)
        if pending:
            raise OverlayError(
                f"not ready within {timeout:.0f} s: {', '.join(n.name for n in pending)}; "
                f"logs in {self.dir}/<node>/agent.log"
            )

    def up(self, nodes: int = 3, backend: str = "vxlan", network: str = "10.5.0.0/16",
           extra_config: dict | None = None, agent_args: tuple[str, ...] = (),
           wait: float = 60.0, start_agents: bool = True, ipv6: str = "",
           remote_nodes: int = 0, backend_options: dict | None = None, replace: bool = False,
           etcd_members: int = 1) -> list[dict]:
        """Build the lab. ``ipv6``: "" (IPv4 only), "dual" or "only". ``remote_nodes``: how
        many of the last nodes sit on a second L2 segment, behind a router. A lab of this name
        that is up is replaced only with ``replace``. On failure the namespaces and processes
        are removed but the logs are kept (``down`` removes them). ``etcd_members``: 1 to 5,
        more than one for an etcd cluster (one member per namespace; agents get every endpoint)."""
        if not 1 <= nodes <= 50:
            raise OverlayError(f"--nodes {nodes}: use 1 to 50 nodes")
        if not 0 <= remote_nodes < nodes:
            raise OverlayError(f"--remote-nodes {remote_nodes}: use 0 to {nodes - 1} (at least one node "
                               "stays on the first segment)")
        if ipv6 not in ("", "dual", "only"):
            raise OverlayError("--ipv6 must be dual or only")
        if not IPv4Network(network, strict=False).subnet_of(IPv4Network("10.0.0.0/8")):
            raise OverlayError("--network must lie inside 10.0.0.0/8 (the lab's address plan)")
        if not replace and (os.path.exists(self.state_file) or list_namespaces(self.prefix)):
            raise OverlayError(f"lab {self.name!r} is already up: take it down first "
                               f"({self.down_command}), or replace it with --replace")
        support = self.support = lab_support(backend)
        refusal = call(support, "check", self, nodes, remote_nodes, ipv6)
        if refusal:
            raise OverlayError(f"--backend {backend}: {refusal}")
        if not 1 <= etcd_members <= 5:
            raise OverlayError("etcd_members must be between 1 and 5")
        self.down()
        os.makedirs(self.dir, exist_ok=True)
        self.state.backend = backend
        self.state.ipv6 = bool(ipv6)
        self.state.segments = 2 if remote_nodes else 1
        self.state.etcd_members = etcd_members
        self._plan_etcd(etcd_members)
        self.save()
        try:
            add_namespace(self.switch)
            for bridge in ("br0", "br1")[: self.state.segments]:
                ip("link", "add", bridge, "type", "bridge", ns=self.switch)
                ip("link", "set", bridge, "up", ns=self.switch)
            if remote_nodes:
                self._router()
            for k in range(1, etcd_members + 1):
                self._host(self.member_ns(k), "etcd" if k == 1 else f"etcd{k}",
                           int(ETCD_IP) - int(UNDERLAY.network_address) + k - 1)
            self._start_etcd()
            call(support, "prepare", self)
            defaults = call(support, "backend_options", self, default={})
            config: dict = {"Network": network,
                            "Backend": {"Type": backend, **defaults, **(backend_options or {})}}
            if ipv6:
                config.update({"EnableIPv6": True, "IPv6Network": POD_NETWORK_V6})
            if ipv6 == "only":
                config = {k: v for k, v in config.items() if k != "Network"}
                config["EnableIPv4"] = False
            config.update(extra_config or {})
            self.write_config(config)
            for i in range(nodes):
                node = self.add_node(segment=1 if i >= nodes - remote_nodes else 0)
                call(support, "node_added", self, node)
                if start_agents:
                    self.start_agent(node, *agent_args)
            if start_agents:
                self.wait_ready(timeout=wait)
        except OverlayError as exc:
            self.down(keep_logs=True)
            raise OverlayError(f"{exc}\nthe lab was taken down; its logs are kept in {self.dir} "
                               f"(remove them with: {self.down_command})") from None
        except BaseException:
            self.down(keep_logs=True)
            raise
        return self.status()

    @property
    def down_command(self) -> str:
        return "overlay-core lab down" + (f" --name {self.name}" if self.name != "lab" else "")

    # -- looking and tearing down --------------------------------------------------------------

    def status(self) -> list[dict]:
        if not self.load():
            return []
        rows = []
        for node in self.state.nodes:
            code, facts = self.readyz(node)
            rows.append({
                "node": node.name, "namespace": node.ns,
                "public_ip": node.ipv6 if self.state.config.get("EnableIPv4") is False else node.ip,
                "subnet": " ".join(filter(None, (facts.get("subnet"), facts.get("ipv6_subnet")))) or "-",
                "backend": facts.get("backend") or "-",
                "peers": facts.get("peers", "-"), "ready": code == 200,
                "agent": "running" if node.pid and not _exited(node.pid) else "stopped",
                **{k: v for k, v in facts.items() if k not in ("subnet", "backend", "peers",
                                                              "public_ip", "ready")},
            })
        return rows

    def down(self, keep_logs: bool = False) -> list[str]:
        """Remove every namespace and process of this lab, with or without a state file, and
        its directory (with ``keep_logs``: only the state file and etcd's data)."""
        self.load()
        removed = []
        infra = (self.etcd_ns, f"{self.prefix}rt", self.switch)
        nodes_first = [n for n in list_namespaces(self.prefix) if n not in infra]
        for ns in nodes_first + [n for n in infra if n in list_namespaces(self.prefix)]:
            delete_namespace(ns)
            removed.append(ns)
        for pid in [n.pid for n in self.state.nodes] + [self.state.etcd_pid, *self.state.etcd_pids]:
            if pid and not _exited(pid):
                try:
                    os.kill(pid, 9)
                except ProcessLookupError:
                    pass
        if keep_logs:
            shutil.rmtree(os.path.join(self.dir, "etcd-data"), ignore_errors=True)
            if os.path.exists(self.state_file):
                os.unlink(self.state_file)
        elif os.path.isdir(self.dir):
            shutil.rmtree(self.dir, ignore_errors=True)
        self.state = LabState(self.name)
        return removed


def _exited(pid: int) -> bool:
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        return bool(done)
    except ChildProcessError:
        return not os.path.exists(f"/proc/{pid}") or _zombie(pid)


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def _tail(path: str, lines: int = 15) -> str:
    try:
        with open(path, errors="replace") as fh:
            return "".join(fh.readlines()[-lines:])
    except OSError:
        return "(no log)"


__all__ = ["Lab", "LabNode", "NetnsError"]
