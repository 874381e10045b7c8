"""The udp backend: Flannel's ``udp`` wire format, forwarded by a supervised forwarder process.

The agent never touches a packet. After the lease it starts (or, after an agent restart, adopts)
``python -m overlay_udp.forwarder`` through the core supervisor; the forwarder owns ``flannel0``
and the UDP socket and outlives the agent. Per peer the backend wants one object, a
``ForwarderRoute`` (peer subnet -> peer public IP), which lives in the ``ForwarderRoutes`` target:
its dump is the forwarder's table, its apply one atomic ``update``. So peer events, the periodic
reconcile, drift repair and a forwarder restart (the supervisor asks for a reconcile) are the core's
``ReconcilingBackend`` machinery. The agent polls the forwarder's counters for ``/readyz`` and
the metrics, and keeps ``flannel0``'s address, MTU, state and network route as Flannel sets them.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import ipaddress
import logging
import sys
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any, ClassVar

import trio
from overlay_core import (
    Capabilities,
    ConfigError,
    LeaseRequest,
    OverlayError,
    PeerPlan,
    PeerStatus,
    ReconcilingBackend,
    hookimpl,
)
from overlay_core.dataplane import intern
from overlay_core.options import option, read_options
from overlay_core.services import ProcessSpec

from . import __version__, control

LOGGER = logging.getLogger("overlay.udp")

TUN = "flannel0"
HEADER_OVERHEAD = 28  # outer IPv4 (20) + UDP (8): the TUN MTU is the underlay's minus this
HELPER = f"udp-forwarder-{TUN}"
SOCKET_PATH_MAX = 107  # sun_path holds 108 bytes with the terminating NUL
COUNTER_POLL = 5.0  # seconds between two reads of the forwarder's counters
FIRST_START_POLL = 0.1
ERROR_PREFIX = "overlay-udp forwarder: "

# The forwarder's global counters (control ``counters``), exported as gauges overlay_udp_<name>.
# Gauges, not counters: the values are the forwarder's and restart from 0 with it.
GLOBAL_COUNTERS = {
    "icmp_unreachable_sent": "ICMP net-unreachable messages sent for packets to a subnet without peer",
    "unroutable_dropped": "Packets without route dropped silently (ICMP offenders, later fragments)",
    "ttl_expired": "Packets dropped because their TTL ran out",
    "sndbuf_full": "Datagrams the forwarder's full UDP send buffer refused",
    "send_errors": "Datagrams whose send failed for another reason",
    "malformed": "Packets or datagrams that were not valid IPv4",
    "tun_write_errors": "Packets the TUN refused",
    "udp_rcvbuf_drops": "Datagrams the kernel dropped because the forwarder's receive buffer was full",
    "tun_queue_drops": "Packets the kernel dropped because the forwarder did not read the TUN fast enough",
}
PEER_COUNTERS = ("tx_packets", "tx_bytes", "rx_packets", "rx_bytes", "drops")


@dataclass(frozen=True)
class UdpOptions:
    port: int = option("Port", 8285, between=(1, 65535))


@dataclass(frozen=True, order=True, slots=True)
class ForwarderRoute:
    """One entry of the forwarder's table: packets to ``subnet`` go to ``peer``:Port."""

    subnet: IPv4Network
    peer: IPv4Address
    kind: ClassVar[str] = "udproute"
    key: tuple = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", ("udproute", self.subnet))

    def __str__(self) -> str:
        return f"udp route {self.subnet} -> {self.peer}"


class ForwarderRoutes:
    """The forwarder's route table as a reconcile target (everything in it is ours)."""

    name = "udp-forwarder"

    def __init__(self, control_path: str) -> None:
        self.control_path = control_path
        self._parsed: dict[tuple[str, str], ForwarderRoute] = {}  # the last dump's objects, by their text


    def accepts(self, obj: Any) -> bool:
        return isinstance(obj, ForwarderRoute)

    def owns(self, obj: Any) -> bool:
        return isinstance(obj, ForwarderRoute)

    async def dump(self) -> list[ForwarderRoute]:
        """The forwarder's table; entries unchanged since the last dump are not parsed again (a
        periodic reconcile at 60 000 peers then costs the JSON, not 60 000 address parses)."""
        reply = await control.request(self.control_path, "routes")
        last, parsed = self._parsed, {}
        for item in reply["routes"].items():
            route = last.get(item)
            parsed[item] = route if route is not None else intern(ForwarderRoute(IPv4Network(item[0]),
                                                                                 IPv4Address(item[1])))
        self._parsed = parsed
        return list(parsed.values())

    async def apply(self, to_set: list[Any], to_delete: list[Any]) -> int:
        """One ``update`` request: the forwarder rebuilds its table once and uses it from the next packet."""
        sets = {str(r.subnet): str(r.peer) for r in to_set}
        deletes = [str(r.subnet) for r in to_delete if str(r.subnet) not in sets]
        try:
            await control.request(self.control_path, "update", set=sets, delete=deletes)
        except (control.ControlError, OSError) as exc:
            LOGGER.warning("forwarder routes: %d changes not applied: %s", len(sets) + len(deletes), exc)
            return len(sets) + len(deletes)
        for route in to_set:
            LOGGER.debug("set %s", route)
        for route in to_delete:
            LOGGER.debug("deleted %s", route)
        return 0


class UdpBackend(ReconcilingBackend):
    type = "udp"
    capabilities = Capabilities(userspace_datapath=True, kernel_features=("tun",), udp_port=8285, udp_port_key="Port")
    lease_type = ""  # as Flannel: the lease carries PublicIP only, no BackendType
    option_names = ("Port",)

    @classmethod
    def parse_options(cls, config) -> UdpOptions:
        """The ``Port`` option, and the refusal of IPv6 (knowable offline: ``config check`` says it too)."""
        if config.ipv6 is not None or config.ipv4 is None:
            raise ConfigError("udp: carries IPv4 only (as Flannel's udp backend): set EnableIPv6 false "
                              "and keep EnableIPv4, or choose vxlan or wireguard for IPv6")
        return read_options(UdpOptions, config, backend="udp")

    def __init__(self, node, services=None) -> None:
        super().__init__(node, services)
        self.options: UdpOptions
        self.mtu = 0
        self.helper: Any = None  # overlay_core.services.Helper once the forwarder is supervised
        self.tun_index: int | None = None
        self.counters: dict[str, Any] = {}
        self.control_path = str(services.path("udp.sock")) if services is not None else "udp.sock"
        self.routes = ForwarderRoutes(self.control_path)
        self.gauges: dict[str, Any] = {}
        if services is not None and services.registry is not None:
            from overlay_core.metrics import Gauge

            self.gauges = {name: Gauge(f"overlay_udp_{name}", doc, registry=services.registry)
                           for name, doc in GLOBAL_COUNTERS.items()}

    # -- startup ---------------------------------------------------------------------------

    @hookimpl
    def overlay_network_config(self, config, node) -> None:
        if node.iface.address is None:
            raise ConfigError(f"udp: the external interface {node.iface.name} has no IPv4 address to bind "
                              f"UDP port {self.options.port} to")
        self.mtu = node.iface.mtu - HEADER_OVERHEAD
        if self.mtu < 576:
            raise ConfigError(f"udp: {node.iface.name}'s MTU {node.iface.mtu} leaves {self.mtu} for {TUN}; "
                              "IPv4 needs at least 576 (use an interface with MTU >= 604)")
        if len(self.control_path.encode()) > SOCKET_PATH_MAX:
            raise ConfigError(f"udp: the forwarder's control socket {self.control_path} is longer than "
                              f"{SOCKET_PATH_MAX} bytes: use a shorter --state-dir")

    @hookimpl
    def overlay_lease_request(self, node) -> LeaseRequest:
        return LeaseRequest("", self.mtu)

    @hookimpl
    async def overlay_lease_acquired(self) -> None:
        await self._ensure_forwarder()
        await self.prepare()

    def forwarder_argv(self) -> list[str]:
        """The forwarder's command line: the same for every agent of this lease, so the next agent
        adopts the running forwarder (routes never go here: they come over the control socket)."""
        node = self.node
        assert node.lease is not None and node.lease.subnet is not None and node.config.network is not None
        return [sys.executable, "-m", "overlay_udp.forwarder", "--control", self.control_path,
                "--network", str(node.config.network), "--subnet", str(node.lease.subnet),
                "--mtu", str(self.mtu), "--bind", str(node.iface.address), "--port", str(self.options.port),
                "--tun", TUN]

    async def _ready(self) -> bool:
        await control.request(self.control_path, "ping")
        return True

    async def _ensure_forwarder(self) -> None:
        """Start or adopt the forwarder; a new lease (another subnet) means a new command line."""
        assert self.services is not None
        argv = self.forwarder_argv()
        if self.helper is not None:
            if list(self.helper.spec.argv) == argv:
                return
            LOGGER.info("lease changed: restarting the forwarder for subnet %s", self.node.lease.subnet)
            await self.helper.stop()
            self.helper = None
        version = await trio.to_thread.run_sync(forwarder_version)  # reads the package's modules, once
        spec = ProcessSpec(HELPER, argv, self._ready, ready_timeout=30.0, version=version,
                           handover_args=("--takeover",))
        self.helper = await first_start(self.services, spec)
        reply = await control.request(self.control_path, "ping")
        LOGGER.info("forwarder pid %d %s: %s path, %d routes", reply["pid"],
                    "adopted" if self.helper.adopted else "started", reply["path"], reply["routes"])
        self.counters = {"path": reply["path"]}
        self.services.tasks.start_every(COUNTER_POLL, self._refresh_counters, name="udp counters")

    # -- the TUN device ----------------------------------------------------------------------

    async def prepare(self) -> None:
        """Before every full reconcile: flannel0 as Flannel sets it (address, MTU, up, the network's
        route), and its ifindex watched, so deleting or downing it triggers a reconcile. A deleted
        flannel0 is the forwarder's to make again: it exits when its device vanishes and the
        supervisor restarts it, which creates the device and asks for a reconcile."""
        lease, network = self.node.lease, self.node.config.network
        if lease is None or lease.subnet is None or network is None:
            return
        address = ipaddress.ip_interface(f"{lease.subnet.network_address}/32")

        links = self.services.links
        info = await links.get(TUN)
        index, changed = (None, False) if info is None else (info.index, False)
        if info is None:
            links.disown(TUN)
        else:
            changed = await links.configure(info.index, [address], [network], self.mtu)
            changed = await links.ensure_route(info.index, network) or changed
            links.own(TUN, info.index)
        self.tun_index = index
        if index is None:
            LOGGER.warning("%s is missing; the forwarder re-creates it when it restarts", TUN)
        elif changed:
            LOGGER.info("repaired %s (address %s, MTU %d, up, route %s)", TUN, address, self.mtu, network)

    # -- peers -------------------------------------------------------------------------------

    def targets(self) -> list:
        return [self.routes]

    def plan(self, peer) -> PeerPlan:
        public = peer.attrs.public_ip
        if peer.subnet is None:
            return PeerPlan("skipped", (), "no IPv4 subnet in its lease")
        if public is None or int(public) == 0:
            return PeerPlan("skipped", (), "no IPv4 public IP in its lease")
        return PeerPlan("udp", (ForwarderRoute(peer.subnet, public),))

    # -- counters ----------------------------------------------------------------------------

    async def _refresh_counters(self) -> None:
        """The forwarder's counters, cached: the status hooks are sync and cheap. None while it
        does not answer (rather than stale figures)."""
        try:
            self.counters = await control.request(self.control_path, "counters")
        except (control.ControlError, OSError):
            self.counters = {}
            raise
        for name, gauge in self.gauges.items():
            if isinstance(self.counters.get(name), int):
                gauge.set(self.counters[name])

    @hookimpl
    def overlay_report(self) -> dict:
        facts: dict[str, Any] = {"path": self.counters.get("path"), "port": self.options.port, "device": TUN}
        if self.helper is not None:
            facts["forwarder_pid"] = self.helper.pid
        facts.update({k: self.counters[k] for k in GLOBAL_COUNTERS if k in self.counters})
        return {**super().overlay_report(), "udp": facts}

    @hookimpl
    def overlay_peer_status(self) -> dict[str, PeerStatus]:
        out = super().overlay_peer_status()
        by_ip = self.counters.get("peers", {})
        for key, (_, _, plan) in self._plans.items():
            if plan.mode != "udp" or key not in out:
                continue
            row = by_ip.get(str(plan.objects[0].peer))
            detail = {name: (row or {}).get(name, 0) for name in PEER_COUNTERS}
            out[key] = dataclasses.replace(out[key], detail={**out[key].detail, **detail})
        return out


AGENT_SIDE_MODULES = ("backend.py", "lab.py")  # not imported by the forwarder


@functools.cache
def forwarder_version() -> str:
    """The forwarder's code: the package version and a digest of the modules it runs. A forwarder
    left by an agent of other code (a package upgrade, even within one version number) is
    replaced by handover: the new one takes its TUN, socket and table over, no packet is lost."""
    digest = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        if path.name not in AGENT_SIDE_MODULES:
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return f"{__version__}+{digest.hexdigest()[:12]}"


async def first_start(services, spec: ProcessSpec):
    """``services.supervise(spec)``, except that a forwarder that exits before it was ever ready
    stops the agent with its own one-line message (port taken, TUN busy) instead of being retried."""
    log = Path(services.state_dir, "helpers", f"{spec.name}.log")
    result: list = []

    async def start(cancel: trio.CancelScope) -> None:
        result.append(await services.supervise(spec))
        cancel.cancel()

    failed = None
    async with trio.open_nursery() as nursery:
        nursery.start_soon(start, nursery.cancel_scope)
        while failed is None:
            await trio.sleep(FIRST_START_POLL)
            helper = services.supervisor.helpers.get(spec.name)
            if helper is not None and helper.restarts > 0 and helper.state != "running":
                failed = helper
                nursery.cancel_scope.cancel()
    if result:
        return result[0]
    await failed.stop()  # its watch was cancelled with the start; forget its record
    raise OverlayError(f"udp: {forwarder_error(log)}")


def forwarder_error(log: Path) -> str:
    """The forwarder's last one-line error in its log, or where to look."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        lines = []
    for line in reversed(lines):
        if line.startswith(ERROR_PREFIX):
            return line[len(ERROR_PREFIX):]
    return f"the forwarder exited before it was ready; see {log}"
