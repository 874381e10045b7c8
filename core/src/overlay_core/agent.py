"""The agent: one node's life, from config to lease to programmed peers, as a trio task tree.

Startup order (Flannel's, reference §3.2): health server → config (retried until valid) →
backend → external interface → backend options → lease (guarded writes) → firewall rules →
subnet file → peer snapshot programmed → ready. Then, side by side: the peer watch, lease
renewal, periodic reconcile, firewall drift checks and config checks. Cancellation (SIGTERM)
leaves the lease, kernel state, rules and subnet file as they are.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import trio

from . import subnetfile
from .backend import Backend, LeaseRequest, Node
from .config import NetworkConfig
from .dataplane.firewall import FamilyRules, Firewall, open_firewall
from .dataplane.monitor import monitor_kernel
from .dataplane.netlink import Netlink
from .dispatch import PeerDispatcher
from .errors import ConfigError, OverlayError
from .etcd import EtcdOptions, EtcdStore, StoreUnavailable
from .health import HealthServer
from .iface import IfaceOptions, read_interfaces, select_interface
from .lease import UNSET_IP, Lease, LeaseAttrs
from .lease_keeper import LeaseKeeper
from .metrics import Metrics, PeerStatusCollector
from .peers import PeerBatch, PeerSet, PeerWatcher
from .plugins import Hooks, PluginManager, load_backend_class
from .retry import Backoff, OutageLog
from .runtime import release_memory, sd_notify
from .services import Services, Supervisor, TaskGroup
from .subnets import LEASE_TTL, Keys, SubnetManager
from .validity import LeaseRules, local_networks

LOGGER = logging.getLogger("overlay.agent")

T = TypeVar("T")

STORE_BACKOFF_START = 0.2
STORE_BACKOFF_MAX = 5.0
CONFIG_RETRY = 1.0
SHUTDOWN_GRACE = 1.0
RECONCILE_DEBOUNCE = 0.05


@dataclass
class AgentOptions:
    """Everything ``overlay-core run`` takes (Flannel's flags)."""

    etcd: EtcdOptions = field(default_factory=EtcdOptions)
    prefix: str = "/coreos.com/network"
    iface: IfaceOptions = field(default_factory=IfaceOptions)
    subnet_file: str = "/run/flannel/subnet.env"
    renew_margin: int = 60
    ip_masq: bool = False
    masq_fully_random: bool = True
    forward_rules: bool = True
    healthz_ip: str = "0.0.0.0"
    healthz_port: int = 0
    firewall_resync: float = 5.0
    reconcile_interval: float = 30.0
    lease_ttl: int = LEASE_TTL
    state_dir: str = "/run/overlay"

    def validate(self) -> None:
        if not 1 <= self.renew_margin <= 1439:
            raise ConfigError(
                f"--subnet-lease-renew-margin {self.renew_margin} is out of range: use 1 to 1439 minutes"
            )
        if self.renew_margin * 60 >= self.lease_ttl:
            raise ConfigError("--subnet-lease-renew-margin must be shorter than the lease TTL")
        if not 0 <= self.healthz_port <= 65535:
            raise ConfigError(f"--healthz-port {self.healthz_port} is not a TCP port")
        for name in ("firewall_resync", "reconcile_interval"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be positive")


class Agent:
    def __init__(self, options: AgentOptions, plugins: PluginManager | None = None) -> None:
        options.validate()
        self.options = options
        self.keys = Keys(options.prefix)
        self.store = EtcdStore(options.etcd)
        self.subnets = SubnetManager(self.store, self.keys, options.lease_ttl)
        self.plugins = plugins or PluginManager()
        self.hooks = Hooks(self.plugins, self._hook_error)
        self.metrics = Metrics()
        self.netlink = Netlink()
        self.peer_set = PeerSet()
        self.phase = "starting"
        self.conflict = ""
        self.config_error = ""
        self.node: Node | None = None
        self.backend: Backend | None = None
        self.keeper: LeaseKeeper | None = None
        self.services: Services | None = None
        self.dispatcher: PeerDispatcher | None = None
        self.firewall: Firewall | None = None
        self.subnet_file_written = False
        self.synced = False
        self.local: tuple = ()
        self._reconcile_now = trio.Event()
        self._addresses_changed = trio.Event()
        self.metrics.config_valid.set(1)
        self.metrics.registry.register(PeerStatusCollector(self._peer_statuses))
        self.store.on_state = self._store_state

    def _peer_statuses(self) -> dict:
        return self.hooks.peer_status(self.node) if self.node is not None else {}

    def _store_state(self, connected: bool) -> None:
        self.metrics.etcd_connected.set(1 if connected else 0)
        self.metrics.etcd_state_since.set(self.store.since)

    # -- readiness -------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        firewall_ok = self.firewall is None or self.firewall.in_place
        return self.synced and self.subnet_file_written and firewall_ok and not self.conflict

    def report(self) -> tuple[bool, dict[str, Any]]:
        facts: dict[str, Any] = {"phase": self.phase}
        node = self.node
        if node is not None:
            facts["backend"] = node.config.backend_type
            facts["public_ip"] = str(node.iface.public_ip or node.iface.public_ipv6)
        if node is not None and node.lease is not None:
            facts["subnet"] = str(node.lease.subnet) if node.lease.subnet else None
            facts["ipv6_subnet"] = str(node.lease.ipv6_subnet) if node.lease.ipv6_subnet else None
            facts["peers"] = len(self.dispatcher.accepted) if self.dispatcher else 0
            facts["reservation"] = node.lease.is_reservation
        facts["store"] = self.store.state()
        if self.services is not None and self.services.supervisor.helpers:
            facts["helpers"] = self.services.supervisor.report()
        if self.dispatcher is not None and self.dispatcher.rejected:
            facts["rejected_leases"] = self.dispatcher.report()
        if self.conflict:
            facts["conflict"] = self.conflict
        if self.config_error:
            facts["config_error"] = self.config_error
        if self.keeper is not None and self.keeper.waiting:
            facts["waiting"] = self.keeper.waiting
        if node is not None:
            facts.update(self.hooks.report(node))
            statuses = self.hooks.peer_status(node)
            if statuses:
                facts["peer_status"] = {key: {"state": st.state, **st.detail} for key, st in sorted(statuses.items())}
        ready = self.ready
        self.metrics.ready.set(1 if ready else 0)
        return ready, facts

    # -- store access with retry -----------------------------------------------------------

    async def _retry(self, what: str, fn: Callable[[], Awaitable[T]]) -> T:
        """Call ``fn`` until etcd answers, logging the outage every 30 s, never crashing."""
        backoff = Backoff(STORE_BACKOFF_START, STORE_BACKOFF_MAX, rand=self.subnets.rand)
        outage = OutageLog(LOGGER, what)
        while True:
            try:
                result = await fn()
            except StoreUnavailable as exc:
                outage.failed(exc)
                await backoff.sleep()
                continue
            outage.recovered()
            return result

    async def _fetch_config(self) -> NetworkConfig:
        self.phase = "fetching-config"
        last_error = ""
        while True:
            try:
                return await self._retry("reading the network config", self.subnets.get_config)
            except ConfigError as exc:
                if str(exc) != last_error:
                    LOGGER.error("%s (retrying every %.0f s)", exc, CONFIG_RETRY)
                    last_error = str(exc)
                await trio.sleep(CONFIG_RETRY)

    # -- peers ---------------------------------------------------------------------------

    def accepted_peers(self) -> list[Lease]:
        return list(self.dispatcher.accepted.values()) if self.dispatcher else []

    def _hook_error(self, hook: str, plugin: str, exc: Exception) -> None:
        LOGGER.error("%s in %s failed: %s: %s", hook, plugin, type(exc).__name__, exc,
                     exc_info=LOGGER.isEnabledFor(logging.DEBUG))
        self.metrics.hook_errors.labels(hook, plugin).inc()
        if hook != "overlay_reconcile":  # a failing reconcile waits for the next tick
            self.request_reconcile()

    async def on_batch(self, batch: PeerBatch, snapshot: bool) -> None:
        assert self.dispatcher is not None
        started = time.perf_counter()
        await self.dispatcher.deliver(self.dispatcher.translate(batch))
        if snapshot:
            peers = self.accepted_peers()
            await self.hooks.store_in_sync(peers, not self.synced, self.node)
            if not self.synced:
                LOGGER.info("store in sync: %d peers programmed", len(peers))
            self.synced = True
        self.metrics.peers.set(len(self.dispatcher.accepted))
        self.metrics.watch_revision.set(self.peer_set.revision)
        self.metrics.batch_seconds.observe(time.perf_counter() - started)

    def _rules(self) -> LeaseRules:
        assert self.node is not None
        lease = self.node.lease
        own = tuple(n for n in ((lease.subnet, lease.ipv6_subnet) if lease else ()) if n is not None)
        return LeaseRules(self.node.config, own, self.local)

    async def _rules_changed(self) -> None:
        """Judge every peer lease again (our subnet or the node's addresses changed)."""
        if self.dispatcher is not None:
            await self.dispatcher.deliver(self.dispatcher.rules_changed(self._rules()))

    async def _taken(self, lease: Lease) -> None:
        """Steps for a lease we now hold: backend hooks, firewall, subnet file, peer rules."""
        await self.hooks.lease_acquired(lease, self.node)
        await self._setup_firewall()
        await self._write_subnet_file()
        await self._rules_changed()

    async def _addresses_loop(self) -> None:
        """Re-read the node's addresses when they change: a peer lease that overlapped one of
        them (or no longer does) is judged again."""
        while True:
            await self._addresses_changed.wait()
            await trio.sleep(RECONCILE_DEBOUNCE)
            self._addresses_changed = trio.Event()
            snapshot = await read_interfaces(self.netlink)
            self.local = local_networks(snapshot.links)
            await self._rules_changed()

    # -- periodic work ---------------------------------------------------------------------

    def _addresses_changed_soon(self) -> None:
        self._addresses_changed.set()

    def request_reconcile(self) -> None:
        """Run the reconcile hook soon (kernel drift seen, or a peer hook failed)."""
        self._reconcile_now.set()

    async def _reconcile_loop(self) -> None:
        while True:
            with trio.move_on_after(self.options.reconcile_interval):
                await self._reconcile_now.wait()
            await trio.sleep(RECONCILE_DEBOUNCE)  # let a burst of kernel events settle
            self._reconcile_now = trio.Event()
            self.metrics.reconciles.inc()
            await self.hooks.reconcile(self.accepted_peers(), self.node)
            await self._check_config()

    async def _firewall_loop(self) -> None:
        while True:
            await trio.sleep(self.options.firewall_resync)
            if self.firewall is not None:
                try:
                    repaired = await self.firewall.check()
                except Exception as exc:  # a failing nft/iptables call must not stop the node
                    LOGGER.error("firewall check failed: %s", exc)
                    continue
                if repaired:
                    self.metrics.firewall_repairs.inc(repaired)

    async def _check_config(self) -> None:
        """Keep running on the last good config: warn once about an unusable one (and show it in
        /readyz), refuse a change of the backend type or the network."""
        node = self.node
        assert node is not None
        try:
            fresh = await self.subnets.get_config()
        except StoreUnavailable as exc:
            LOGGER.debug("config check skipped: %s", exc)
            return
        except ConfigError as exc:
            error = f"the network config in the store is unusable ({exc}); running on the last good one"
            if error != self.config_error:
                LOGGER.warning("%s", error)
            self.config_error = error
            self.metrics.config_valid.set(0)
            return
        if self.config_error:
            LOGGER.info("the network config in the store is valid again")
            self.config_error = ""
        self.metrics.config_valid.set(0 if self.conflict else 1)
        if fresh.same_network(node.config):
            if self.conflict:
                LOGGER.info("network config matches the running one again")
            self.conflict = ""
            if fresh.raw != node.config.raw and fresh.backend != node.config.backend:
                LOGGER.info("backend options changed; restart the agent to apply them")
            return
        conflict = (
            f"the network config now asks for backend {fresh.backend_type!r} on "
            f"{fresh.network or fresh.ipv6_network}, but this agent runs {node.config.backend_type!r} "
            f"on {node.config.network or node.config.ipv6_network}; the change is refused and the "
            "data plane is kept: restore the config, or drain and restart the nodes"
        )
        if conflict != self.conflict:
            LOGGER.error("%s", conflict)
        self.conflict = conflict
        self.metrics.config_valid.set(0)

    # -- setup steps -------------------------------------------------------------------------

    async def _setup_firewall(self) -> None:
        node = self.node
        assert node is not None and node.lease is not None
        opts = self.options
        if not (opts.ip_masq or opts.forward_rules):
            return
        rules = []
        for rng, subnet in ((node.config.ipv4, node.lease.subnet), (node.config.ipv6, node.lease.ipv6_subnet)):
            if rng is not None and subnet is not None:
                rules.append(FamilyRules(rng.network, subnet, opts.ip_masq, opts.forward_rules,
                                         opts.masq_fully_random))
        if self.firewall is None:
            self.firewall = Firewall(open_firewall(node.config.enable_nftables), rules)
        self.firewall.rules = rules
        await self.firewall.apply()

    async def _write_subnet_file(self) -> None:
        node = self.node
        assert node is not None and node.lease is not None
        text = subnetfile.render(node.config, node.lease, node.mtu, self.options.ip_masq)
        await trio.to_thread.run_sync(subnetfile.write, self.options.subnet_file, text)
        self.subnet_file_written = True
        LOGGER.info("wrote %s", self.options.subnet_file)

    async def _start_backend(self, config: NetworkConfig) -> Node:
        backend_cls = load_backend_class(config.backend_type)
        observers = self.plugins.load_observers()
        snapshot = await read_interfaces(self.netlink, self.options.iface.can_reach)
        self.local = local_networks(snapshot.links)
        iface = select_interface(
            snapshot, replace(self.options.iface, ipv4=config.ipv4 is not None, ipv6=config.ipv6 is not None),
        )
        LOGGER.info(
            "using interface %s (index %d, MTU %d), public IP %s%s",
            iface.name, iface.index, iface.mtu, iface.public_ip or "-",
            f", public IPv6 {iface.public_ipv6}" if iface.public_ipv6 else "",
        )
        node = self.node = Node(config, iface, self.netlink, metrics=self.metrics)
        assert self.services is not None
        self.backend = backend_cls(node, self.services)
        self.plugins.register(self.backend, name=f"backend:{backend_cls.type}")
        self.dispatcher = PeerDispatcher(LeaseRules(config), self.backend.accepts, self.hooks, node, self.metrics)
        self.keeper = LeaseKeeper(node, self.subnets, self.peer_set, self._retry, self._taken, self.hooks,
                                  self.metrics, self.options.renew_margin * 60, self.on_batch)
        LOGGER.info("backend %s loaded%s", backend_cls.type,
                    f"; observer plugins: {', '.join(observers)}" if observers else "")
        await self.hooks.network_config(config, node)
        return node

    async def _lease_attrs(self, node: Node) -> tuple[LeaseAttrs, int]:
        assert self.backend is not None
        request = (await self.hooks.lease_request(node.config, node)
                   or LeaseRequest(self.backend.advertised_type(), node.iface.mtu))
        attrs = LeaseAttrs(
            node.iface.public_ip or UNSET_IP,
            node.iface.public_ipv6,
            request.backend_type,
            request.backend_data,
            request.backend_v6_data,
        )
        return attrs, request.mtu

    # -- the whole life ------------------------------------------------------------------------

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Run the node until cancelled. ``task_status.started()`` fires once ready."""
        async with trio.open_nursery() as nursery:
            tasks = TaskGroup(nursery)
            state_dir = Path(self.options.state_dir)
            self.services = Services(tasks, Supervisor(state_dir, tasks, self.metrics.registry), state_dir,
                                     self.netlink, self.metrics.registry, self.request_reconcile)
            if self.options.healthz_port:
                server = HealthServer(self.report, self.metrics.registry)
                await nursery.start(server.serve, self.options.healthz_ip, self.options.healthz_port)
            config = await self._fetch_config()
            LOGGER.info("network config: %s", config.redacted())
            node = await self._start_backend(config)
            attrs, node.mtu = await self._lease_attrs(node)
            self.phase = "acquiring-lease"
            previous = subnetfile.previous_subnets(self.options.subnet_file)
            keeper = self.keeper
            assert keeper is not None
            lease = await keeper.acquire(config, attrs, previous)
            await keeper.take(lease)
            self.phase = "syncing-peers"
            watcher = PeerWatcher(self.store, self.keys.subnets, self.peer_set, self.on_batch,
                                  keeper.on_own, self.metrics)
            await nursery.start(watcher.run)
            nursery.start_soon(keeper.renew_loop)
            nursery.start_soon(self._reconcile_loop)
            await nursery.start(monitor_kernel, node.owned_links, self.request_reconcile,
                                self._addresses_changed_soon)
            nursery.start_soon(self._addresses_loop)
            nursery.start_soon(self._firewall_loop)
            self.phase = "running"
            release_memory()
            self.report()
            sd_notify("READY=1")
            LOGGER.info("ready: subnet %s, %d peers", lease.describe(), len(self.accepted_peers()))
            task_status.started(self)

    async def shutdown(self) -> None:
        """Give plugins their shutdown hook (bounded), then close sockets. Kernel state stays."""
        if self.node is not None:
            with trio.move_on_after(SHUTDOWN_GRACE) as scope:
                scope.shield = True
                try:
                    await self.hooks.shutdown(self.node)
                except Exception as exc:
                    LOGGER.error("shutdown hook failed: %s", exc)
        self.netlink.close()
        self.store.close()


async def run_agent(options: AgentOptions, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Run an agent until SIGTERM/SIGINT; then stop within a second, leaving state in place."""
    import signal

    agent = Agent(options)
    try:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async with trio.open_nursery() as nursery:

                async def stop_on_signal() -> None:
                    async for signum in signals:
                        LOGGER.info("%s received; stopping (lease, routes and rules stay)",
                                    signal.Signals(signum).name)
                        nursery.cancel_scope.cancel()
                        return

                nursery.start_soon(stop_on_signal)
                await nursery.start(agent.run)
                task_status.started(agent)
    finally:
        await agent.shutdown()


__all__ = ["Agent", "AgentOptions", "OverlayError", "run_agent"]
