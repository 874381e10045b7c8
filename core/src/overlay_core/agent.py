"""The agent: one node's life, from config to lease to programmed peers, as a trio task tree.

Startup order (Flannel's, reference §3.2): health server → config (retried until valid) →
backend → external interface → backend options → firewall tool → lease (guarded writes) →
lease hooks (backend devices, firewall rules, subnet file) → peer snapshot programmed → ready.
Then, side by side: the peer watch, lease renewal, periodic reconcile and config checks, the
kernel monitor, and the built-in plugins' tasks. Each job lives in its own module; the agent
wires them. Cancellation (SIGTERM) leaves the lease, kernel state, rules and subnet file.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import trio

from .agent_options import AgentOptions
from .backend import Backend, LeaseRequest, Node
from .builtin import BlackholeRoutes, FirewallRules, SubnetFile
from .config import NetworkConfig
from .config_watch import ConfigWatch
from .dataplane.device_record import FILE_NAME as DEVICE_RECORD
from .dataplane.links import Links
from .dataplane.monitor import monitor_kernel
from .dataplane.netlink import Netlink
from .dispatch import PeerDispatcher
from .errors import OverlayError
from .etcd import EtcdStore, retry_store
from .health import HealthServer
from .iface import read_interfaces, select_interface
from .lease import UNSET_IP, Lease, LeaseAttrs
from .lease_keeper import LeaseKeeper
from .metrics import Metrics, PeerStatusCollector
from .peers import PeerBatch, PeerSet, PeerWatcher
from .plugins import Hooks, PluginManager, load_backend_class
from .readiness import node_report
from .runtime import release_memory, sd_notify
from .services import Services, Supervisor, TaskGroup
from .subnets import Keys, SubnetManager
from .validity import LeaseRules, local_networks

LOGGER = logging.getLogger("overlay.agent")

SHUTDOWN_GRACE = 1.0
RECONCILE_DEBOUNCE = 0.05


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
        self.config_watch = ConfigWatch(self.subnets.get_config, self.metrics)
        self.phase = "starting"
        self.node: Node | None = None
        self.backend: Backend | None = None
        self.keeper: LeaseKeeper | None = None
        self.services: Services | None = None
        self.dispatcher: PeerDispatcher | None = None
        self.builtins: list[Any] = []
        self.synced = False
        self.local: tuple = ()
        self.held: set = set()  # every subnet this agent has held: leftovers on its bridge are its own
        self.owned: set[int] = set()  # ifindexes of the backend's devices (Links), watched for drift
        self._reconcile_now = trio.Event()
        self._addresses_changed = trio.Event()
        self.metrics.registry.register(PeerStatusCollector(self._peer_statuses))
        self.store.on_state = self._store_state

    def _retry(self, what, fn):
        return retry_store(what, fn, self.subnets.rand)

    def _peer_statuses(self) -> dict:
        return self.hooks.peer_status(self.node) if self.node is not None else {}

    def _store_state(self, connected: bool) -> None:
        self.metrics.etcd_connected.set(1 if connected else 0)
        self.metrics.etcd_state_since.set(self.store.since)

    # -- readiness -------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self.synced and all(b.ready for b in self.builtins) and not self.config_watch.conflict

    def report(self) -> tuple[bool, dict[str, Any]]:
        facts = node_report(self)
        ready = self.ready and not facts.get("not_ready")  # a plugin's one-line reason (overlay_report)
        self.metrics.ready.set(1 if ready else 0)
        return ready, facts

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

    async def _judge_again(self) -> None:
        """Judge every peer lease again: our subnet or the node's addresses changed."""
        assert self.node is not None and self.dispatcher is not None
        lease = self.node.lease
        own = tuple(n for n in ((lease.subnet, lease.ipv6_subnet) if lease else ()) if n is not None)
        self.held.update(own)
        rules = LeaseRules(self.node.config, own, self.local, tuple(sorted(self.held - set(own), key=str)))
        await self.dispatcher.deliver(self.dispatcher.rules_changed(rules))

    async def _taken(self, lease: Lease) -> None:
        """A lease we now hold: backend devices, firewall rules and subnet file (lease hooks), peers judged again."""
        await self.hooks.lease_acquired(lease, self.node)
        await self._judge_again()

    async def _addresses_loop(self) -> None:
        while True:
            await self._addresses_changed.wait()
            await trio.sleep(RECONCILE_DEBOUNCE)
            self._addresses_changed = trio.Event()
            self.local = local_networks((await read_interfaces(self.netlink)).links)
            await self._judge_again()

    # -- periodic work ---------------------------------------------------------------------

    def request_reconcile(self) -> None:
        """Run the reconcile hook soon (kernel drift seen, or a peer hook failed)."""
        self._reconcile_now.set()

    async def _reconcile_loop(self) -> None:
        assert self.node is not None
        while True:
            with trio.move_on_after(self.options.reconcile_interval):
                await self._reconcile_now.wait()
            await trio.sleep(RECONCILE_DEBOUNCE)  # let a burst of kernel events settle
            self._reconcile_now = trio.Event()
            self.metrics.reconciles.inc()
            await self.hooks.reconcile(self.accepted_peers(), self.node)
            if self.services is not None:
                await self.services.links.save_record()  # devices a repair made anew
            await self.config_watch.check(self.node.config)

    # -- setup steps -------------------------------------------------------------------------

    def _register_builtins(self, services: Services) -> tuple[FirewallRules, SubnetFile]:
        opts = self.options
        firewall = FirewallRules(opts.ip_masq, opts.forward_rules, opts.masq_fully_random, opts.firewall_resync,
                                 services.tasks, self.metrics)
        subnet_file = SubnetFile(opts.subnet_file, opts.ip_masq)
        self.builtins = [firewall, subnet_file]
        if opts.blackhole_route:
            self.builtins.append(BlackholeRoutes(self.netlink, opts.firewall_resync, services.tasks))
        for plugin in self.builtins:
            self.plugins.register(plugin, name=f"builtin:{type(plugin).__name__}")
        return firewall, subnet_file

    async def _start_backend(self, config: NetworkConfig, services: Services) -> Node:
        backend_cls = load_backend_class(config.backend_type)
        observers = self.plugins.load_observers()
        snapshot = await read_interfaces(self.netlink, self.options.iface.can_reach)
        self.local = local_networks(snapshot.links)
        iface = select_interface(
            snapshot, replace(self.options.iface, ipv4=config.ipv4 is not None, ipv6=config.ipv6 is not None),
        )
        LOGGER.info("using interface %s (index %d, MTU %d), public IP %s%s", iface.name, iface.index, iface.mtu,
                    iface.public_ip or "-", f", public IPv6 {iface.public_ipv6}" if iface.public_ipv6 else "")
        node = self.node = Node(config, iface, self.netlink, metrics=self.metrics, owned_links=self.owned)
        self.backend = backend_cls(node, services)
        self.plugins.register(self.backend, name=f"backend:{backend_cls.type}")
        self.dispatcher = PeerDispatcher(LeaseRules(config), self.backend.accepts, self.hooks, node, self.metrics)
        self.keeper = LeaseKeeper(node, self.subnets, self.peer_set, self._retry, self._taken, self.hooks,
                                  self.metrics, self.options.renew_margin * 60, self.on_batch)
        LOGGER.info("backend %s loaded%s", backend_cls.type,
                    f"; observer plugins: {', '.join(observers)}" if observers else "")
        await self.hooks.network_config(config, node)
        return node

    async def _lease_attrs(self, node: Node) -> LeaseAttrs:
        assert self.backend is not None
        request = (await self.hooks.lease_request(node.config, node)
                   or LeaseRequest(self.backend.advertised_type(), node.iface.mtu))
        node.mtu = request.mtu
        return LeaseAttrs(node.iface.public_ip or UNSET_IP, node.iface.public_ipv6, request.backend_type,
                          request.backend_data, request.backend_v6_data)

    # -- the whole life ------------------------------------------------------------------------

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Run the node until cancelled. ``task_status.started()`` fires once ready."""
        async with trio.open_nursery() as nursery:
            tasks = TaskGroup(nursery)
            state_dir = Path(self.options.state_dir)
            services = self.services = Services(tasks, Supervisor(state_dir, tasks, self.metrics.registry),
                                                state_dir, self.netlink,
                                                Links(self.netlink, self.owned, state_dir / DEVICE_RECORD),
                                                self.metrics.registry, self.request_reconcile)
            if self.options.healthz_port:
                server = HealthServer(self.report, self.metrics.registry)
                await nursery.start(server.serve, self.options.healthz_ip, self.options.healthz_port)
            self.phase = "fetching-config"
            config = await self.config_watch.first(self._retry)
            LOGGER.info("network config: %s", config.shown())  # credentials masked
            firewall, subnet_file = self._register_builtins(services)
            node = await self._start_backend(config, services)
            await firewall.open(config)  # a precondition: checked before anything is written to the store
            attrs = await self._lease_attrs(node)
            self.phase = "acquiring-lease"
            keeper = self.keeper
            assert keeper is not None
            previous = subnet_file.previous()
            self.held.update(n for n in previous if n is not None)
            await keeper.take(await keeper.acquire(config, attrs, previous))
            self.phase = "syncing-peers"
            watcher = PeerWatcher(self.store, self.keys.subnets, self.peer_set, self.on_batch,
                                  keeper.on_own, self.metrics)
            await nursery.start(watcher.run)
            nursery.start_soon(keeper.renew_loop)
            nursery.start_soon(self._reconcile_loop)
            await nursery.start(monitor_kernel, node.owned_links, self.request_reconcile, self._addresses_changed.set)
            nursery.start_soon(self._addresses_loop)
            await services.links.save_record()  # for overlay-core cleanup
            self.phase = "running"
            release_memory()
            self.report()
            sd_notify("READY=1")
            LOGGER.info("ready: subnet %s, %d peers", node.lease.describe(), len(self.accepted_peers()))
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


__all__ = ["Agent", "AgentOptions", "OverlayError"]
