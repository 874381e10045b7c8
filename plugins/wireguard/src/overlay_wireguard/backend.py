"""The wireguard backend: per device (``flannel-wg``, ``flannel-wg-v6``) a kernel WireGuard device
where the module exists (created through core's ``links``, configured over generic netlink), else
one wireguard-go as a supervised helper; its peers as a reconcile target per device, its network
route in the kernel target. Which path a node takes is decided and logged at start
(``kernel.choose_data_path``).

Order of a node's start: options and MTU (``overlay_network_config``); the key file and
wireguard-go before the lease, because the lease carries the public key
(``overlay_lease_request``); addresses, MTU and routes once the subnet is known
(``overlay_lease_acquired``); peers from the first snapshot on (``ReconcilingBackend``).
wireguard-go outlives the agent and is adopted by the next one with its device and peers, so an
agent restart loses no packet (a kernel device simply stays and is adopted). When wireguard-go
dies its device goes with it; the supervisor restarts it and asks for a reconcile, whose
``prepare`` sets the device up again and whose converge pushes the key and peers again.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import trio
from overlay_core import Capabilities, KernelBackend, LeaseRequest, OverlayError, PeerPlan, PeerStatus, hookimpl
from overlay_core.dataplane import LinkInfo, Route
from overlay_core.services import Helper, ProcessSpec

from .calc import (
    BACKEND_TYPE,
    DEVICE,
    DEVICE_V6,
    DeviceLayout,
    DeviceSpec,
    Local,
    device_layouts,
    devices,
    lease_data,
    plan_peer,
)
from .kernel import KERNEL, LINK_KIND, choose_data_path, kernel_device
from .keys import KeyPair, key_file_path, load_or_create
from .options import OPTION_NAMES, WgOptions, device_mtu, parse_options
from .peer import DeviceConfig, WgPeer
from .status import PeerReport, peer_report
from .target import WireguardDeviceTarget
from .uapi import UapiError
from .userspace import SYSTEM_SOCKET_DIR, WireguardGo

LOGGER = logging.getLogger("overlay.wireguard")

NODE_STATE_DIR = Path("/run/overlay")  # `overlay-core run`'s default --state-dir: one agent on this machine
STATUS_INTERVAL = 5.0  # seconds between two reads of the handshake times and counters
READY_TIMEOUT = 15.0
_STATE_RANK = {"up": 0, "programmed": 1, "stale": 2}  # the worse state of a peer's two devices is shown


def socket_dir(state_dir: Path) -> Path:
    """Where wireguard-go serves its UAPI sockets: ``/var/run/wireguard`` (``wg show`` works as
    usual) when the agent runs with the default state directory; with any other ``--state-dir``
    (several agents on one machine, as in the lab) ``<state-dir>/wireguard``, so that nodes never
    share ``flannel-wg.sock``."""
    return SYSTEM_SOCKET_DIR if state_dir == NODE_STATE_DIR else state_dir / "wireguard"


class WireguardBackend(KernelBackend):
    type = BACKEND_TYPE
    capabilities = Capabilities(ipv6=True, encrypted=True, kernel_features_any=("wireguard", "tun"),
                                udp_port=51820, udp_port_key="ListenPort")
    option_names = OPTION_NAMES  # core checks the keys (misspelt ones refused with a suggestion)

    @classmethod
    def parse_options(cls, config) -> WgOptions:
        return parse_options(config)

    def __init__(self, node, services=None) -> None:
        super().__init__(node, services)
        self.options: WgOptions
        self.mtu = 0
        self.keys: KeyPair | None = None
        self.local: Local | None = None
        self.instances: dict[str, WireguardGo] = {}
        self.helpers: dict[str, Helper] = {}
        self.devices: dict[str, WireguardDeviceTarget] = {}
        self.index: dict[str, int] = {}  # device name -> ifindex
        self.data_path = ""  # kernel.KERNEL or kernel.USERSPACE, chosen at start

    # -- start ------------------------------------------------------------------------------

    @hookimpl
    def overlay_network_config(self, config, node) -> None:
        self.mtu = device_mtu(self.options, node.iface.mtu, config.ipv6 is not None)

    @hookimpl
    async def overlay_lease_request(self, node) -> LeaseRequest:
        cfg = node.config
        self.keys = await trio.to_thread.run_sync(load_or_create, key_file_path())
        self.local = Local(self.options, cfg.ipv4 is not None, cfg.ipv6 is not None, node.iface.public_ip,
                           node.iface.public_ipv6, self.keys.public)
        self.data_path, why = await trio.to_thread.run_sync(choose_data_path)
        if self.data_path == KERNEL:
            LOGGER.info("wireguard: kernel data path (%s): devices through netlink, keys and peers over generic "
                        "netlink", why)
            await self._start_kernel_devices()
        else:
            LOGGER.info("wireguard: wireguard-go data path (%s)", why)
            await self._start_helpers()
        data, data_v6 = lease_data(self.local, self.keys.public)
        return LeaseRequest(BACKEND_TYPE, self.mtu, data, data_v6)

    async def _start_helpers(self) -> None:
        assert self.services is not None and self.local is not None
        directory = socket_dir(self.services.state_dir)
        wanted = devices(self.local)
        for name in {DEVICE, DEVICE_V6} - {spec.name for spec in wanted}:
            await self._stop_left_over(WireguardGo(name, directory))
        for spec in wanted:
            inst = self.instances[spec.name] = WireguardGo(spec.name, directory)
            await trio.to_thread.run_sync(inst.prepare)
            self.devices[spec.name] = WireguardDeviceTarget(inst.client())
            helper = self.helpers[spec.name] = await self.services.supervise(ProcessSpec(
                f"wireguard-go-{spec.name}", inst.argv(), inst.ready, dict(inst.env), ready_timeout=READY_TIMEOUT))
            how = "adopted" if helper.adopted else "started"
            LOGGER.info("%s wireguard-go for %s (pid %s, UAPI socket %s)", how, spec.name, helper.pid, inst.socket_path)
            if not helper.adopted:  # a fresh device: its key and port at once, peers follow with the first sync
                await self.devices[spec.name].apply([self._device_config(spec)], [])

    async def _start_kernel_devices(self) -> None:
        """Kernel path: a wireguard-go left by a previous agent goes (the kernel takes over its
        device name), a kernel device this config no longer has is deleted, and each wanted
        device is adopted or created with its key and port."""
        assert self.services is not None and self.local is not None
        directory = socket_dir(self.services.state_dir)
        wanted = {spec.name for spec in devices(self.local)}
        for name in (DEVICE, DEVICE_V6):
            await self._stop_left_over(WireguardGo(name, directory), "the kernel data path takes over")
            info = await self.services.links.get(name)
            if name not in wanted and info is not None and info.kind == LINK_KIND:
                await self.services.links.delete(name)
                LOGGER.info("deleted kernel device %s: this network config has no %s", name, name)
        for name in sorted(wanted):
            await self._ensure_kernel_device(name)

    async def _ensure_kernel_device(self, name: str) -> LinkInfo:
        """Adopt kernel device ``name`` as it is, or create it (replacing a device of another
        kind, e.g. a wireguard-go TUN) and give it its key and port at once; peers follow with
        the next converge."""
        assert self.services is not None and self.local is not None
        spec = next(s for s in devices(self.local) if s.name == name)
        target = self.devices.get(name)
        if target is None:
            target = self.devices[name] = WireguardDeviceTarget(kernel_device(self.services.links, name))
        info, action = await self.services.links.ensure(
            name, LINK_KIND, lambda found: None if found.kind == LINK_KIND else f"it is a {found.kind or 'plain'} "
            "device, not a kernel wireguard one", lambda previous: {"mtu": self.mtu})
        if action != "adopted":
            await target.apply([self._device_config(spec)], [])
            LOGGER.info("%s kernel wireguard device %s (index %d, MTU %d)", action, name, info.index, self.mtu)
        return info

    async def _stop_left_over(self, inst: WireguardGo, why: str = "") -> None:
        """A previous agent ran wireguard-go for a device this config no longer has (``Mode`` or
        IPv6 changed), or the kernel path takes the device over: adopt it through its record and
        stop it, so it and its device go."""
        assert self.services is not None
        name = f"wireguard-go-{inst.device}"
        if not self.services.path("helpers", f"{name}.json").exists():
            return
        await trio.to_thread.run_sync(inst.prepare)  # in case the recorded process is gone and it starts afresh
        helper = await self.services.supervise(ProcessSpec(name, inst.argv(), inst.ready, dict(inst.env),
                                                           ready_timeout=READY_TIMEOUT))
        await helper.stop()
        LOGGER.info("stopped wireguard-go for %s (pid %s): %s", inst.device, helper.pid,
                    why or f"this network config has no {inst.device}")

    @hookimpl
    async def overlay_lease_acquired(self) -> None:
        await self.ensure_devices()
        if self.services is not None:
            self.services.tasks.start_every(STATUS_INTERVAL, self._refresh_status, name="wireguard peer status")

    # -- devices ----------------------------------------------------------------------------

    def _device_config(self, spec: DeviceSpec) -> DeviceConfig:
        assert self.keys is not None
        return DeviceConfig(self.keys.private, spec.port, spec.name)

    def _layouts(self) -> tuple[DeviceLayout, ...]:
        lease, cfg = self.node.lease, self.node.config
        if lease is None or self.local is None:
            return ()
        return device_layouts(self.local, lease, cfg.network, cfg.ipv6_network, self.mtu)

    async def ensure_devices(self) -> None:
        """The devices wireguard-go made get their addresses, MTU and state up (before every
        full reconcile); a device whose wireguard-go is restarting is an error until it runs."""
        for name, helper in self.helpers.items():
            if helper.state != "running":
                raise OverlayError(f"wireguard: wireguard-go for {name} is {helper.state}; "
                                   "its device is set up again once it runs")
        layouts = self._layouts()
        networks = [n for n in (self.node.config.network, self.node.config.ipv6_network) if n is not None]

        links = self.services.links
        for layout in layouts:
            if self.data_path == KERNEL:  # a device deleted by hand comes back
                info = await self._ensure_kernel_device(layout.name)
            else:
                info = await links.get(layout.name)
            if info is None:
                raise OverlayError(f"wireguard: device {layout.name} is missing although wireguard-go runs; "
                                   "it is checked again on the next reconcile")
            await links.configure(info.index, list(layout.addresses), networks, layout.mtu)
            self.index[layout.name] = info.index
            if links.own(f"wireguard:{layout.name}", info.index):
                LOGGER.info("set up %s (index %d, MTU %d)", layout.name, info.index, self.mtu)

    # -- reconcile ----------------------------------------------------------------------------

    def targets(self):
        return [self.kernel, *self.devices.values()]

    def plan(self, peer) -> PeerPlan:
        assert self.local is not None
        plan = plan_peer(self.local, peer)
        if plan.skipped:
            return PeerPlan("skipped", (), plan.skipped)
        return PeerPlan("wireguard", plan.peers)

    def desired(self, peers) -> list:
        """The peers' WireGuard peers, plus per device its key and port and its network route
        (``<Network> dev flannel-wg``, proto 79, no gateway)."""
        out = super().desired(peers)
        assert self.local is not None
        out += [self._device_config(spec) for spec in devices(self.local)]
        for layout in self._layouts():
            index = self.index.get(layout.name)
            if index is not None:
                out += [Route(net, None, index) for net in layout.routes]
        return out

    # -- status -------------------------------------------------------------------------------

    async def _refresh_status(self) -> None:
        """Handshake times and counters for ``/readyz`` and metrics (a full reconcile reads them
        too); a device that does not answer keeps its last figures."""
        for target in self.devices.values():
            try:
                target.last_status = (await target.client.get()).peers
            except UapiError as exc:
                LOGGER.debug("peer status of %s: %s", target.name, exc)

    @hookimpl
    def overlay_peer_status(self) -> dict[str, PeerStatus]:
        """Per peer lease: ``up``, ``stale`` (no handshake for 3 minutes) or ``programmed`` (none
        yet), with endpoint, handshake age and rx/tx bytes; a peer on two devices (``separate``
        mode, dual stack) shows the worse state, both endpoints, the older handshake and summed bytes."""
        out = super().overlay_peer_status()
        now = time.time()
        states = {name: {s.peer.key: s for s in target.last_status} for name, target in self.devices.items()}
        for key, (_, _, plan) in self._plans.items():
            reports = [peer_report(p.device, states[p.device][p.key], now) for p in plan.objects
                       if isinstance(p, WgPeer) and p.key in states.get(p.device, {})]
            if reports:
                status = _combine(reports)
                out[key] = PeerStatus(status.state, {**out[key].detail, **status.detail})
        return out

    @hookimpl
    def overlay_report(self) -> dict:
        data_plane: dict[str, dict] = {name: {"kernel": True, "index": self.index.get(name)}
                                       for name in self.devices if name not in self.instances}
        for name, inst in self.instances.items():
            helper = self.helpers.get(name)
            data_plane[name] = {"wireguard_go_pid": helper.pid if helper else None, "socket": str(inst.socket_path),
                                "index": self.index.get(name)}
        return {**super().overlay_report(), "wireguard_public_key": self.keys.public if self.keys else None,
                "wireguard_data_path": self.data_path, "wireguard_devices": data_plane}


def _combine(reports: list[PeerReport]) -> PeerStatus:
    if len(reports) == 1:
        return PeerStatus(reports[0].state, reports[0].detail)
    ages = [r.detail["handshake_age_s"] for r in reports]
    return PeerStatus(max((r.state for r in reports), key=_STATE_RANK.__getitem__), {
        "device": ", ".join(r.detail["device"] for r in reports),
        "endpoint": ", ".join(str(r.detail["endpoint"]) for r in reports),
        "allowed_ips": [n for r in reports for n in r.detail["allowed_ips"]],
        "handshake_age_s": None if None in ages else max(ages),
        "rx_bytes": sum(r.detail["rx_bytes"] for r in reports),
        "tx_bytes": sum(r.detail["tx_bytes"] for r in reports),
    })
