"""The agent: one node's life, from config to lease to programmed peers, as a trio task tree.

Startup order (Flannel's, reference §3.2): health server → config (retried until valid) →
backend → external interface → backend options → firewall tool → lease (guarded writes) → firewall rules →
subnet file → peer snapshot programmed → ready. Then, side by side: the peer watch, lease
renewal, periodic reconcile, firewall drift checks and config checks. Cancellation (SIGTERM)
leaves the lease, kernel state, rules and subnet file as they are.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import trio

from . import subnetfile
from .backend import Backend, LeaseRequest, Node
from .blackhole import keep_blackhole_routes
from .config import NetworkConfig
from .dataplane.firewall import FamilyRules, Firewall, open_firewall
from .dataplane.monitor import monitor_kernel
from .dataplane.netlink import Netlink
from .errors import ConfigError, OverlayError, SubnetsExhaustedError
from .etcd import EtcdOptions, EtcdStore, StoreUnavailable
from .health import HealthServer
from .iface import IfaceOptions, read_interfaces, select_interface
from .kernel_backend import LOG_EACH
from .lease import UNSET_IP, Lease, LeaseAttrs
from .metrics import Metrics
from .peers import OwnKeyEvent, PeerBatch, PeerSet, PeerWatcher
from .plugins import PluginManager, load_backend_class
from .subnets import LEASE_TTL, Keys, LeaseLost, SubnetManager, owned_by

LOGGER = logging.getLogger("overlay.agent")

T = TypeVar("T")

STORE_BACKOFF_START = 0.2
STORE_BACKOFF_MAX = 5.0
CONFIG_RETRY = 1.0
RENEW_RETRY = 60.0
SHUTDOWN_GRACE = 1.0
RECONCILE_DEBOUNCE = 0.05
EXHAUSTED_RETRY = 5.0


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
    blackhole_route: bool = False
    healthz_ip: str = "0.0.0.0"
    healthz_port: int = 0
    firewall_resync: float = 5.0
    reconcile_interval: float = 30.0
    lease_ttl: int = LEASE_TTL

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


def _sd_notify(message: str) -> None:
    """Tell systemd (Type=notify) we are ready; a no-op without NOTIFY_SOCKET."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return
    if path.startswith("@"):
        path = "\0" + path[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(message.encode(), path)
    except OSError as exc:
        LOGGER.warning("systemd notification failed: %s", exc)


def _release_memory() -> None:
    """Hand freed heap back to the OS after the start-up burst (imports, first sync)."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class Agent:
    def __init__(self, options: AgentOptions, plugins: PluginManager | None = None) -> None:
        options.validate()
        self.options = options
        self.keys = Keys(options.prefix)
        self.store = EtcdStore(options.etcd)
        self.subnets = SubnetManager(self.store, self.keys, options.lease_ttl)
        self.plugins = plugins or PluginManager()
        self.metrics = Metrics()
        self.netlink = Netlink()
        self.peer_set = PeerSet()
        self.phase = "starting"
        self.conflict = ""
        self.waiting = ""
        self.node: Node | None = None
        self.backend: Backend | None = None
        self.firewall: Firewall | None = None
        self.subnet_file_written = False
        self.synced = False
        self.peer_count = 0
        self.expires_at: float | None = None
        self._lease_changed = trio.Event()
        self._reconcile_now = trio.Event()
        self._ignored: set[str] = set()
        self._store_down_logged = -math.inf

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
            facts["peers"] = self.peer_count
            facts["reservation"] = node.lease.is_reservation
        if self.conflict:
            facts["conflict"] = self.conflict
        if self.waiting:
            facts["waiting"] = self.waiting
        if node is not None:
            for extra in self.plugins.pm.hook.overlay_report(node=node):
                if isinstance(extra, dict):
                    facts.update(extra)
        ready = self.ready
        self.metrics.ready.set(1 if ready else 0)
        return ready, facts

    # -- store access with retry -----------------------------------------------------------

    async def _retry(self, what: str, fn: Callable[[], Awaitable[T]]) -> T:
        """Call ``fn`` until etcd answers, logging the outage every 30 s, never crashing."""
        backoff = STORE_BACKOFF_START
        since = None
        while True:
            try:
                result = await fn()
            except StoreUnavailable as exc:
                now = trio.current_time()
                since = since if since is not None else now
                if now - self._store_down_logged >= 30:
                    self._store_down_logged = now
                    LOGGER.warning("%s: %s; retrying (for %.0f s so far)", what, exc, now - since)
                await trio.sleep(backoff * (0.5 + self.subnets.rand.random()))
                backoff = min(backoff * 2, STORE_BACKOFF_MAX)
                continue
            if since is not None:
                LOGGER.info("%s: etcd answered after %.1f s", what, trio.current_time() - since)
                self._store_down_logged = -math.inf
            return result

    async def _acquire(self, config: NetworkConfig, attrs: LeaseAttrs, previous=(None, None)) -> Lease:
        """Acquire a lease; when every subnet is taken, say so (log and /readyz) and keep trying:
        a node joining a full network waits for a subnet instead of crash-looping."""
        last = ""
        while True:
            try:
                lease = await self._retry("acquiring a lease", lambda: self.subnets.acquire(config, attrs, previous))
            except SubnetsExhaustedError as exc:
                if str(exc) != last:
                    LOGGER.error("%s (retrying every %.0f s)", exc, EXHAUSTED_RETRY)
                    last = str(exc)
                self.waiting = str(exc)
                await trio.sleep(EXHAUSTED_RETRY)
                continue
            self.waiting = ""
            return lease

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
        return [p for p in self.peer_set.peers.values() if self._accepts(p)]

    def _accepts(self, lease: Lease) -> bool:
        assert self.backend is not None
        if self.backend.accepts(lease):
            return True
        if lease.key not in self._ignored:
            self._ignored.add(lease.key)
            LOGGER.info(
                "ignoring lease %s: BackendType %r is not %r",
                lease.key, lease.attrs.backend_type, self.backend.advertised_type(),
            )
        return False

    def _hook_error(self, hook: str) -> Callable[[str, Exception], None]:
        def report(plugin: str, exc: Exception) -> None:
            LOGGER.error("%s in %s failed: %s: %s", hook, plugin, type(exc).__name__, exc,
                         exc_info=LOGGER.isEnabledFor(logging.DEBUG))
            self.metrics.hook_errors.labels(hook, plugin).inc()
            if hook != "overlay_reconcile":  # a failing reconcile waits for the next tick
                self.request_reconcile()

        return report

    async def _emit(self, hook: str, **kwargs: Any) -> None:
        await self.plugins.call_each(hook, self._hook_error(hook), node=self.node, **kwargs)

    async def on_batch(self, batch: PeerBatch, snapshot: bool) -> None:
        started = time.perf_counter()
        removed = [p for p in batch.removed if self._accepts(p)]
        added = [p for p in batch.added if self._accepts(p)]
        changed = []
        for old, new in batch.changed:
            was, now = self._accepts(old), self._accepts(new)
            if was and now:
                changed.append((old, new))
            elif was:
                removed.append(old)
            elif now:
                added.append(new)
        for hook, items, kind in (
            ("overlay_peers_removed", removed, "removed"),
            ("overlay_peers_changed", changed, "changed"),
            ("overlay_peers_added", added, "added"),
        ):
            if items:
                shown = ", ".join((i[1] if isinstance(i, tuple) else i).describe() for i in items[:LOG_EACH])
                more = f" and {len(items) - LOG_EACH} more" if len(items) > LOG_EACH else ""
                LOGGER.info("peers %s: %s%s", kind, shown, more)
                self.metrics.peer_events.labels(kind).inc(len(items))
                arg = "changes" if kind == "changed" else "peers"
                await self._emit(hook, **{arg: items})
        peers = self.accepted_peers() if snapshot else None
        if peers is not None:
            await self._emit("overlay_store_in_sync", peers=peers, initial=not self.synced)
            if not self.synced:
                LOGGER.info("store in sync: %d peers programmed", len(peers))
            self.synced = True
        self.peer_count = len(peers) if peers is not None else self.peer_count + len(added) - len(removed)
        self.metrics.peers.set(self.peer_count)
        self.metrics.watch_revision.set(self.peer_set.revision)
        self.metrics.batch_seconds.observe(time.perf_counter() - started)

    async def on_own(self, event: OwnKeyEvent) -> None:
        """Our own key changed: adopt a renewal/reservation, re-create it, or move on."""
        node = self.node
        assert node is not None and node.lease is not None
        current = node.lease
        if event.lease is not None:
            if owned_by(event.lease, current.attrs, node.config):
                if event.lease.revision >= current.revision:
                    if event.lease.is_reservation and not current.is_reservation:
                        LOGGER.info("our lease %s became a reservation; no more renewals", current.key)
                    node.lease = event.lease
                    self._wake_renewal()
                return
            await self._lost(f"its key now names {event.lease.attrs.public_ip}")
            return
        LOGGER.warning("our lease key %s disappeared; re-creating it on the same subnet", current.key)
        fresh = await self._retry("re-creating our lease", lambda: self.subnets.reacquire(current))
        if fresh is None:
            await self._lost("another node took it while our key was gone")
            return
        node.lease = fresh
        self._wake_renewal()
        await self._refresh_expiry()

    async def _lost(self, reason: str) -> None:
        node = self.node
        assert node is not None and node.lease is not None
        old = node.lease
        LOGGER.error("lost subnet %s: %s; acquiring another one", old.key, reason)
        await self._emit("overlay_lease_lost", lease=old, reason=reason)
        await self._take(await self._acquire(node.config, old.attrs))

    async def _take(self, lease: Lease) -> None:
        """Make ``lease`` ours: hooks, firewall, subnet file."""
        node = self.node
        assert node is not None
        node.lease = lease
        self.peer_set.own_key = lease.key
        self.peer_set.peers.pop(lease.key, None)
        await self.plugins.call("overlay_lease_acquired", lease=lease, node=node)
        await self._setup_firewall()
        await self._write_subnet_file()
        await self._refresh_expiry()
        self._wake_renewal()

    # -- lease renewal ---------------------------------------------------------------------

    def _wake_renewal(self) -> None:
        self._lease_changed.set()
        self._lease_changed = trio.Event()

    async def _refresh_expiry(self) -> None:
        assert self.node is not None and self.node.lease is not None
        remaining = await self._retry("reading our lease TTL", lambda: self.subnets.remaining(self.node.lease))
        self._set_expiry(remaining)

    def _set_expiry(self, remaining: float | None) -> None:
        if remaining is None:
            self.expires_at = None
            self.metrics.lease_expiry.set(0)
        else:
            self.expires_at = trio.current_time() + remaining
            self.metrics.lease_expiry.set(time.time() + remaining)

    async def _renew_loop(self) -> None:
        margin = self.options.renew_margin * 60
        while True:
            node = self.node
            assert node is not None and node.lease is not None
            changed = self._lease_changed
            if node.lease.is_reservation or self.expires_at is None:
                await changed.wait()
                continue
            delay = self.expires_at - margin - trio.current_time()
            with trio.move_on_after(max(delay, 0)):
                await changed.wait()
                continue
            try:
                lease, remaining = await self.subnets.renew(node.lease)
            except StoreUnavailable as exc:
                self.metrics.renewals.labels("failed").inc()
                LOGGER.warning("lease renewal failed (%s); retrying in %.0f s", exc, RENEW_RETRY)
                with trio.move_on_after(RENEW_RETRY):
                    await changed.wait()
                continue
            except LeaseLost as exc:
                self.metrics.renewals.labels("lost").inc()
                await self._lost(str(exc))
                continue
            self.metrics.renewals.labels("ok").inc()
            if lease is not node.lease:
                node.lease = lease
            self._set_expiry(remaining)
            LOGGER.info("renewed lease %s (%.0f s left)", lease.key, remaining or 0)
            await self._emit("overlay_lease_renewed", lease=lease, remaining=remaining)

    # -- periodic work ---------------------------------------------------------------------

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
            await self._emit("overlay_reconcile", peers=self.accepted_peers())
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
        """Refuse a config change that would alter the backend type or the network."""
        node = self.node
        assert node is not None
        try:
            fresh = await self.subnets.get_config()
        except (StoreUnavailable, ConfigError) as exc:
            LOGGER.debug("config check skipped: %s", exc)
            return
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

    # -- setup steps -------------------------------------------------------------------------

    async def _open_firewall(self, config: NetworkConfig) -> None:
        """Find the firewall tool (a start-up precondition) before anything is written to the store."""
        if self.options.ip_masq or self.options.forward_rules:
            versions = tuple(v for v, rng in ((4, config.ipv4), (6, config.ipv6)) if rng is not None)
            self.firewall = Firewall(await trio.to_thread.run_sync(open_firewall, config.enable_nftables, versions), [])

    async def _setup_firewall(self) -> None:
        node = self.node
        assert node is not None and node.lease is not None
        opts = self.options
        if self.firewall is None:
            return
        rules = []
        for rng, subnet in ((node.config.ipv4, node.lease.subnet), (node.config.ipv6, node.lease.ipv6_subnet)):
            if rng is not None and subnet is not None:
                rules.append(FamilyRules(rng.network, subnet, opts.ip_masq, opts.forward_rules,
                                         opts.masq_fully_random))
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
        iface = select_interface(
            await read_interfaces(self.netlink, self.options.iface.can_reach),
            replace(self.options.iface, ipv4=config.ipv4 is not None, ipv6=config.ipv6 is not None),
        )
        LOGGER.info(
            "using interface %s (index %d, MTU %d), public IP %s%s",
            iface.name, iface.index, iface.mtu, iface.public_ip or "-",
            f", public IPv6 {iface.public_ipv6}" if iface.public_ipv6 else "",
        )
        node = self.node = Node(config, iface, self.netlink, metrics=self.metrics)
        self.backend = backend_cls(node)
        self.plugins.register(self.backend, name=f"backend:{backend_cls.type}")
        LOGGER.info("backend %s loaded%s", backend_cls.type,
                    f"; observer plugins: {', '.join(observers)}" if observers else "")
        await self.plugins.call("overlay_network_config", config=config, node=node)
        return node

    async def _lease_attrs(self, node: Node) -> tuple[LeaseAttrs, int]:
        assert self.backend is not None
        found = await self.plugins.call("overlay_lease_request", firstresult=True,
                                        config=node.config, node=node)
        request = found[0] if found else LeaseRequest(self.backend.advertised_type(), node.iface.mtu)
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
            if self.options.healthz_port:
                server = HealthServer(self.report, self.metrics.registry)
                await nursery.start(server.serve, self.options.healthz_ip, self.options.healthz_port)
            config = await self._fetch_config()
            LOGGER.info("network config: %s", config.raw.strip())
            node = await self._start_backend(config)
            await self._open_firewall(config)
            attrs, node.mtu = await self._lease_attrs(node)
            self.phase = "acquiring-lease"
            previous = subnetfile.previous_subnets(self.options.subnet_file)
            lease = await self._acquire(config, attrs, previous)
            await self._take(lease)
            self.phase = "syncing-peers"
            watcher = PeerWatcher(self.store, self.keys.subnets, self.peer_set, self.on_batch,
                                  self.on_own, self.metrics)
            await nursery.start(watcher.run)
            nursery.start_soon(self._renew_loop)
            nursery.start_soon(self._reconcile_loop)
            await nursery.start(monitor_kernel, node.owned_links, self.request_reconcile)
            nursery.start_soon(self._firewall_loop)
            if self.options.blackhole_route:
                period = self.options.firewall_resync
                nursery.start_soon(keep_blackhole_routes, self.netlink, lambda: node.lease, period)
            self.phase = "running"
            _release_memory()
            self.report()
            _sd_notify("READY=1")
            LOGGER.info("ready: subnet %s, %d peers", lease.describe(), self.peer_count)
            task_status.started(self)

    async def shutdown(self) -> None:
        """Give plugins their shutdown hook (bounded), then close sockets. Kernel state stays."""
        if self.node is not None:
            with trio.move_on_after(SHUTDOWN_GRACE) as scope:
                scope.shield = True
                try:
                    await self.plugins.call("overlay_shutdown", node=self.node)
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
