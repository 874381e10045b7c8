"""``overlay-core cleanup``: remove exactly what overlay made on this node, and nothing else.

What counts as ours, and how it is found without the agent:

- the configured backend's reconcile targets, converged to nothing: the backend class is
  constructed offline and told the network config (``overlay_network_config``, which creates
  nothing), so ``targets()`` are what the agent would program; plus core's kernel target (routes
  of ``proto 79`` inside the network, permanent neighbour and FDB entries on our devices) when
  the backend has none, or when the config only comes from the subnet file;
- helper processes the supervisor recorded in ``--state-dir``, stopped only while their
  ``/proc`` command line and start time still match the record;
- devices recorded in ``--state-dir`` (``device_record``), deleted only while a device of that
  name has the recorded kind;
- the built-in firewall plugin's nft tables (``ip flannel-ipv4``, ``ip6 flannel-ipv6``) and
  iptables chains (``FLANNEL-POSTRTG``, ``FLANNEL-FWD`` and their jumps);
- the ``--ip-blackhole-route`` route of the own subnet, the subnet file, and with
  ``--release-lease`` the own lease in etcd (only when it names an address of this node).

It refuses to run while an agent (ours or flanneld) runs in this network namespace: that agent
would put everything back. A second run finds nothing and says so.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import trio

from .. import reconcile
from ..agent_options import AgentOptions
from ..backend import ExternalInterface, Node
from ..config import NetworkConfig
from ..dataplane.device_record import RecordedDevice, read_record
from ..dataplane.firewall import JUMPS, MAX_DUPLICATE_JUMPS, teardown_commands
from ..dataplane.kernel import Kernel
from ..dataplane.links import Links, read_link
from ..dataplane.netlink import Netlink
from ..dataplane.objects import Scope
from ..errors import OverlayError
from ..etcd import EtcdStore
from ..iface import Snapshot, read_interfaces, select_interface
from ..lease import lease_from_kv, make_subnet_key
from ..services import Services, Supervisor
from ..subnets import Keys
from . import probes
from .context import config_from_subnet_file, device_record_path, own_subnets, read_store

NFT_TABLES = (("ip", "flannel-ipv4"), ("ip6", "flannel-ipv6"))


@dataclass
class Item:
    """One thing of ours found on the node, and how to remove it. ``remove`` may answer False:
    the thing went away meanwhile (a TUN device with its helper process)."""

    what: str
    remove: Callable[[], Awaitable[Any]]


@dataclass
class Outcome:
    removed: list[str]
    failed: list[str]
    notes: list[str]


def _run(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=30)


async def _run_checked(args: list[str]) -> None:
    proc = await trio.to_thread.run_sync(_run, args)
    if proc.returncode != 0:
        raise OSError(proc.stderr.strip() or f"{' '.join(args)} failed")


class NodeCleanup:
    """Finds (``find``) and removes (``run``) what overlay made; ``notes`` say what was not checked."""

    def __init__(self, options: AgentOptions, release_lease: bool = False) -> None:
        self.options = options
        self.release_lease = release_lease
        self.netlink = Netlink()
        self.notes: list[str] = []
        self.supervisor = Supervisor(options.state_dir, tasks=None)  # type: ignore[arg-type]

    def close(self) -> None:
        self.netlink.close()

    async def find(self) -> list[Item]:
        agents = await trio.to_thread.run_sync(probes.agents_here)
        if agents:
            listing = ", ".join(f"{a.program} (pid {a.pid})" for a in agents)
            raise OverlayError(f"an agent runs in this network namespace: {listing}; stop it first, "
                               "or it puts back what cleanup removes")
        store = await read_store(self.options)
        config = store.config
        if config is None:
            self.notes.append(f"store not used ({store.error}); networks taken from {self.options.subnet_file}")
            config = config_from_subnet_file(self.options.subnet_file)
        snapshot = await read_interfaces(self.netlink)
        devices = await self._recorded_devices()
        items = await self._targets(config, store.config is not None, snapshot, devices)
        items += self._helpers()
        items += [Item(f"device {d.name} ({d.kind})", self._delete_device(d)) for d in devices.values()]
        items += await self._firewall()
        items += await self._blackholes()
        if self.release_lease:
            items += await self._lease(snapshot)
        if os.path.exists(self.options.subnet_file):
            items.append(Item(f"subnet file {self.options.subnet_file}",
                              lambda: trio.to_thread.run_sync(os.unlink, self.options.subnet_file)))
        return items

    async def run(self, dry_run: bool = False) -> Outcome:
        items = await self.find()
        outcome = Outcome([], [], self.notes)
        for item in items:
            if dry_run:
                outcome.removed.append(item.what)
                continue
            try:
                done = await item.remove()
            except (OSError, OverlayError) as exc:
                outcome.failed.append(f"{item.what}: {exc}")
            except Exception as exc:  # a backend target's own error type: reported, the rest still goes
                outcome.failed.append(f"{item.what}: {type(exc).__name__}: {exc}")
            else:
                outcome.removed.append(item.what if done is not False else f"{item.what}: gone already")
        if not dry_run and not outcome.failed:
            await self.supervisor.cleanup()  # records of helpers that are gone already
            await trio.to_thread.run_sync(_unlink_quietly, device_record_path(self.options))
        return outcome

    # -- finders -----------------------------------------------------------------------------------

    async def _recorded_devices(self) -> dict[int, RecordedDevice]:
        """Recorded devices that exist now with the recorded kind, by ifindex."""
        recorded = await trio.to_thread.run_sync(read_record, device_record_path(self.options))
        out = {}
        for device in recorded:
            info = await self.netlink.call(lambda ipr, name=device.name: read_link(ipr, name))
            if info is not None and info.kind == device.kind:
                out[info.index] = device
            elif info is not None:
                self.notes.append(f"device {device.name} is a {info.kind or 'plain'} device now, not the "
                                  f"{device.kind} device overlay made: left alone")
        return out

    async def _targets(self, config: NetworkConfig | None, from_store: bool, snapshot: Snapshot,
                       devices: dict[int, RecordedDevice]) -> list[Item]:
        if config is None:
            self.notes.append("no network config (store unreachable, no subnet file): routes not checked")
            return []
        owned = set(devices)
        targets: list[Any] = []
        if from_store:
            targets = await self._backend_targets(config, snapshot, owned)
        if not any(isinstance(t, Kernel) for t in targets):
            networks = tuple(n for n in (config.network, config.ipv6_network) if n is not None)
            targets.append(Kernel(self.netlink, lambda: Scope(networks, tuple(sorted(owned)))))
        items = []
        for target in targets:
            try:
                _, objects = reconcile.diff([], await target.dump(), target.owns)
            except Exception as exc:  # a backend's target we cannot read (its daemon is gone)
                self.notes.append(f"{target.name}: not checked: {type(exc).__name__}: {exc}")
                continue
            for obj in objects:
                shown, kind = str(obj), reconcile.kind(obj)
                shown = shown if kind.startswith(shown.split(" ", 1)[0]) else f"{kind} {shown}"  # "neigh …" is said
                items.append(Item(f"{shown} ({target.name})", _converge_away(target, obj)))
        return items

    async def _backend_targets(self, config: NetworkConfig, snapshot: Snapshot, owned: set[int]) -> list[Any]:
        """The configured backend's targets, from the class constructed offline (see the module doc)."""
        from ..kernel_backend import ReconcilingBackend
        from ..plugins import Hooks, PluginManager, load_backend_class

        try:
            cls = load_backend_class(config.backend_type)
        except OverlayError as exc:
            self.notes.append(f"{exc}: only core's kernel objects are looked for")
            return []
        if not issubclass(cls, ReconcilingBackend):
            return []
        try:
            iface = select_interface(snapshot, replace(self.options.iface, ipv4=config.ipv4 is not None,
                                                       ipv6=config.ipv6 is not None))
        except OverlayError:
            iface = ExternalInterface("", 0, 0)
        node = Node(config, iface, self.netlink, owned_links=owned)
        services = Services(tasks=None, supervisor=self.supervisor, state_dir=Path(self.options.state_dir),  # type: ignore[arg-type]
                            netlink=self.netlink, links=Links(self.netlink, owned), registry=None,
                            reconcile_soon=lambda: None)
        try:
            backend = cls(node, services)
            manager = PluginManager()
            manager.register(backend, name=f"backend:{cls.type}")
            await Hooks(manager).network_config(config, node)
            return await backend.cleanup_targets()
        except Exception as exc:  # what the backend refuses offline: say so, keep the generic part
            self.notes.append(f"backend {cls.type} could not be set up offline ({type(exc).__name__}: {exc}): "
                              "only core's kernel objects are looked for")
            return []

    def _helpers(self) -> list[Item]:
        return [Item(f"helper process {name} (pid {pid})", _stop_helper(self.supervisor, name))
                for name, pid in self.supervisor.recorded().items()]

    def _delete_device(self, device: RecordedDevice) -> Callable[[], Awaitable[Any]]:
        def delete(ipr) -> bool:
            info = read_link(ipr, device.name)
            if info is None or info.kind != device.kind:  # gone with its helper (or replaced meanwhile)
                return False
            ipr.link("del", index=info.index)
            return True

        return lambda: self.netlink.call(delete)

    async def _firewall(self) -> list[Item]:
        items = []
        for family, table in NFT_TABLES:
            if (await trio.to_thread.run_sync(_run, ["nft", "list", "table", family, table])).returncode == 0:
                items.append(Item(f"nft table {family} {table}",
                                  lambda f=family, t=table: _run_checked(["nft", "delete", "table", f, t])))
        for version in (4, 6):
            tool = "iptables" if version == 4 else "ip6tables"
            for table, (_, chain, _) in JUMPS.items():
                probe = await trio.to_thread.run_sync(_run, [tool, "-w", "5", "-t", table, "-S", chain])
                if probe.returncode == 0:
                    items.append(Item(f"{tool} chain {chain} (table {table}) and its jump",
                                      _iptables_teardown(version, table)))
        return items

    async def _blackholes(self) -> list[Item]:
        items = []
        for subnet in own_subnets(self.options.subnet_file):
            if subnet is None:
                continue
            family = "-4" if subnet.version == 4 else "-6"
            listing = await trio.to_thread.run_sync(_run, ["ip", family, "route", "show", "type", "blackhole",
                                                           "exact", str(subnet)])
            if listing.stdout.strip():
                items.append(Item(f"blackhole route {subnet}",
                                  lambda f=family, s=subnet: _run_checked(["ip", f, "route", "del", "blackhole",
                                                                           str(s)])))
        return items

    async def _lease(self, snapshot: Snapshot) -> list[Item]:
        v4, v6 = own_subnets(self.options.subnet_file)
        if v4 is None and v6 is None:
            self.notes.append(f"--release-lease: {self.options.subnet_file} names no subnet: no lease to release")
            return []
        key = Keys(self.options.prefix).subnets + make_subnet_key(v4, v6)
        store = EtcdStore(self.options.etcd)
        try:
            with trio.fail_after(10):
                kv = await store.get(key)
        except (OverlayError, trio.TooSlowError):
            raise OverlayError(f"--release-lease needs etcd at {self.options.etcd.label()}, which does not "
                               "answer; run cleanup again once it does, or without --release-lease") from None
        finally:
            store.close()
        if kv is None:
            return []
        lease = lease_from_kv(kv.key, kv.value, kv.mod_revision, kv.lease_id)
        public = [ip for ip in (lease.attrs.public_ip, lease.attrs.public_ipv6) if ip is not None and int(ip)]
        if not any(link.has(ip) for link in snapshot.links for ip in public):
            self.notes.append(f"lease {key} names {', '.join(map(str, public)) or 'no address'}, not an address "
                              "of this node: left in etcd")
            return []

        async def release() -> None:
            store = EtcdStore(self.options.etcd)
            try:
                with trio.fail_after(10):
                    if not await store.delete(key, expect_revision=kv.mod_revision):
                        raise OverlayError("it changed meanwhile; run cleanup again")
            except trio.TooSlowError:
                raise OverlayError("etcd did not answer within 10 s") from None
            finally:
                store.close()

        return [Item(f"lease {key} in etcd", release)]


def _converge_away(target: Any, obj: Any) -> Callable[[], Awaitable[None]]:
    async def remove() -> None:
        if await target.apply([], [obj]):
            raise OverlayError(f"{target.name} refused to remove it (see the log line above)")

    return remove


def _stop_helper(supervisor: Supervisor, name: str) -> Callable[[], Awaitable[None]]:
    async def stop() -> None:
        await supervisor.cleanup([name])

    return stop


def _iptables_teardown(version: int, table: str) -> Callable[[], Awaitable[None]]:
    async def teardown() -> None:
        unjump, *remove_chain = teardown_commands(version, table)
        for _ in range(MAX_DUPLICATE_JUMPS):  # every copy of our jump: a chain still jumped to cannot be deleted
            if (await trio.to_thread.run_sync(_run, unjump)).returncode != 0:
                break
        for args in remove_chain:
            await _run_checked(args)

    return teardown


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
