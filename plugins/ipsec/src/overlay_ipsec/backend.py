"""The ipsec backend: Flannel's IPsec with strongSwan's charon as a supervised helper.

Startup: the ESP probe picks the kernel mode (``kernel``: Flannel's xfrm policies; ``libipsec``:
charon's userspace ESP behind ``ipsec0``), charon is started or adopted through core's
supervisor with our own strongswan.conf and private VICI socket, and charon itself checks the
ESP proposal before any peer is touched. Per peer, the plan holds the charon connection, the
wish "its CHILD_SA is up", the peer's PSK owner and, by mode, Flannel's three xfrm policies
(kernel) or an ``unreachable`` route to the peer's subnet in the main table (libipsec: while a
CHILD_SA is down charon's table-220 route is gone, and without it pod traffic would leave by the
default route in clear). Every periodic reconcile restores what is missing (an SA terminated by
hand, a deleted policy or route) and removes what belongs to vanished peers; a charon restarted
by the supervisor is reprogrammed by the reconcile it triggers.
"""

from __future__ import annotations

import ipaddress
import logging
from functools import partial
from pathlib import Path

import trio
from overlay_core import Capabilities, ConfigError, KernelBackend, LeaseRequest, PeerPlan, PeerStatus, hookimpl
from overlay_core.dataplane import Route
from overlay_core.reconcile import Target
from overlay_core.retry import OutageLog
from overlay_core.services import Helper, ProcessSpec

from .calc import KERNEL, LEASE_TYPE, LIBIPSEC, ConnSpec, node_objects, plan_peer
from .charon import CharonPaths, charon_argv, choose_mode, find_charon, vici_ready, write_config
from .options import KEYS, IpsecOptions, parse_options
from .target import CharonTarget, XfrmPolicyTarget
from .vici_client import ViciClient, ViciError

LOGGER = logging.getLogger("overlay.ipsec")

HELPER = "charon"
TUN_DEVICE = "ipsec0"  # kernel-libipsec's TUN device, created by charon
READY_TIMEOUT = 20.0  # charon loads some 40 plugins; slow on a loaded machine
STATUS_EVERY = 5.0  # seconds between two list-sas for peer status and a missing CHILD_SA
NEGOTIATING_EVERY = 0.5  # ... while the SAs of connections just loaded are being negotiated
NEGOTIATING_FOR = 10.0  # how long after a load the faster refresh may last


class IpsecBackend(KernelBackend):
    """``Backend.Type`` ``ipsec``: per peer a charon connection (and policies or a fail-closed route)."""

    type = "ipsec"
    # peers reach us with IKE and ESP in UDP on 4500 (NAT traversal), as Flannel configures charon
    capabilities = Capabilities(encrypted=True, kernel_features_any=("esp", "tun"), udp_port=4500)
    option_names = KEYS  # core checks the keys (misspelt ones refused with a suggestion)

    @classmethod
    def parse_options(cls, config) -> IpsecOptions:
        return parse_options(config)

    def __init__(self, node, services=None) -> None:
        super().__init__(node, services)
        self.options: IpsecOptions
        self.mode = ""
        self.charon_path = ""
        self.paths = CharonPaths.under(services.state_dir if services is not None else Path("/run/overlay"))
        self.client = ViciClient(self.paths.vici)
        self.charon = CharonTarget(self.client, on_loaded=self._negotiation_started)
        self._negotiation = trio.Event()  # set when connections were loaded: refresh SA state soon
        self.policies: XfrmPolicyTarget | None = None
        self.helper: Helper | None = None
        self.tun_index: int | None = None
        self.outage = OutageLog(LOGGER, "ipsec: charon does not answer", note="established SAs stay up")

    # -- startup -------------------------------------------------------------------------------

    @hookimpl
    async def overlay_network_config(self, config, node) -> None:
        if node.iface.public_ip is None:
            raise ConfigError(f"ipsec: the external interface {node.iface.name} has no IPv4 address; "
                              "choose one with --iface or --public-ip")
        self.charon_path = find_charon()
        self.mode = await trio.to_thread.run_sync(choose_mode)
        if self.mode == KERNEL:
            self.policies = XfrmPolicyTarget(config.network)
            LOGGER.info("ipsec: kernel mode: the kernel does ESP, with Flannel's xfrm policies")
        else:
            LOGGER.info("ipsec: libipsec mode: this kernel has no ESP, so charon does it in userspace "
                        "behind %s (ESP in UDP, MTU at most 1400)", TUN_DEVICE)

    @hookimpl
    async def overlay_lease_request(self, node) -> LeaseRequest:
        """Start (or adopt) charon and let it judge the ESP proposal, before any lease or peer."""
        assert self.services is not None, "the ipsec backend needs core's services"
        await trio.to_thread.run_sync(write_config, self.paths, self.mode)
        spec = ProcessSpec(HELPER, charon_argv(self.charon_path, self.paths), ready=partial(vici_ready, self.paths),
                           ready_timeout=READY_TIMEOUT)
        self.helper = await self.services.supervise(spec)
        LOGGER.info("ipsec: charon %s (pid %s); VICI: swanctl --list-sas --uri %s",
                    "adopted" if self.helper.adopted else "started", self.helper.pid, self.paths.uri)
        await self.client.check_esp_proposal(self.options.esp_proposal)
        self.services.tasks.start_soon(self._watch_sas, name="ipsec SA status")
        return LeaseRequest(LEASE_TYPE, self.options.mtu(node.iface.mtu, libipsec=self.mode == LIBIPSEC))

    @hookimpl
    async def overlay_lease_acquired(self) -> None:
        """A (new) subnet: its address on ``ipsec0`` before the peers' connections use it."""
        await self.ensure_devices()

    @hookimpl
    async def overlay_shutdown(self) -> None:
        """charon stays (it carries the data plane and is adopted by the next agent); only our
        VICI thread ends."""
        await self.client.aclose()

    # -- the reconcile machinery ------------------------------------------------------------------

    def targets(self) -> list[Target]:
        policies: list[Target] = [self.policies] if self.policies is not None else []
        return [self.kernel, *policies, self.charon]

    def plan_context(self) -> tuple:
        lease = self.node.lease
        return (lease.subnet if lease else None, lease.attrs.public_ip if lease else None, self.mode)

    def plan(self, peer) -> PeerPlan:
        assert self.node.lease is not None and self.node.config.network is not None
        decision = plan_peer(self.node.lease, peer, self.options, self.mode, self.node.config.network)
        if decision.skipped:
            return PeerPlan("skipped", (), decision.reason)
        objects: tuple = decision.objects
        if self.mode == LIBIPSEC:
            objects += (Route(peer.subnet, None, 0, type="unreachable"),)
        return PeerPlan("ipsec", objects)

    def desired(self, peers) -> list:
        own = node_objects(self.node.lease, self.options) if self.node.lease is not None else []
        return [*own, *super().desired(peers)]

    async def ensure_devices(self) -> None:
        """libipsec mode: our subnet's first address (/32) on ``ipsec0``. charon installs a
        CHILD_SA only with a route to the peer's subnet whose source lies in our traffic selector,
        and before any pod exists the node has no address there (the vxlan backend puts the same
        address on flannel.1). ``ipsec0`` is charon's: only charon can make it, so when it is gone
        while the charon that made it runs (deleted by hand), charon is restarted, which brings
        back the device and, by the reconcile after the restart, every SA."""
        lease = self.node.lease
        if self.mode != LIBIPSEC or lease is None or lease.subnet is None:
            return
        address = ipaddress.ip_interface(f"{lease.subnet.network_address}/32")
        network = self.node.config.network

        links = self.services.links
        info = await links.get(TUN_DEVICE)
        if info is None:
            links.disown(TUN_DEVICE)
            if self.tun_index is not None and self.helper is not None:
                self.helper.restart(f"{TUN_DEVICE} is gone and only charon can make it again")
            self.tun_index = None
            return
        await links.configure(info.index, [address], [network])
        links.own(TUN_DEVICE, info.index)
        self.tun_index = info.index

    async def converge(self, peers) -> tuple[int, int]:
        """The full reconcile; while charon does not answer, one warning line every 30 s (the
        supervisor restarts it, and its restart asks for the next reconcile)."""
        try:
            changed = await super().converge(peers)
        except ViciError as exc:
            self.outage.failed(exc)
            self.charon.sas = []
            return 0, 0
        self.outage.recovered()
        return changed

    def _negotiation_started(self) -> None:
        self._negotiation.set()

    async def _watch_sas(self) -> None:
        """Fresh SA state for /readyz and metrics every few seconds, and every half second for
        a while after connections were loaded (new or changed peers) until every SA is up, so
        ``/readyz`` shows new SAs as they come. A wanted CHILD_SA that is down (terminated by
        hand, its peer restarted) asks for a reconcile, which initiates it; not sooner than
        ``STATUS_EVERY`` after a load, so a negotiation charon has not begun yet is not doubled."""
        asked = fast_until = -STATUS_EVERY
        settled = True
        while True:
            now = trio.current_time()
            with trio.move_on_after(NEGOTIATING_EVERY if not settled and now < fast_until else STATUS_EVERY):
                await self._negotiation.wait()
            if self._negotiation.is_set():
                self._negotiation = trio.Event()
                asked = trio.current_time()
                fast_until = asked + NEGOTIATING_FOR
            if self.helper is None or self.helper.state != "running" or not self.synced:
                continue
            try:
                self.charon.sas = await self.client.list_sas()
            except ViciError:
                continue  # charon is going away; the supervisor and the reconcile handle it
            states = {status.state for status in self._sa_status().values()}
            settled = states <= {"established"}
            if "down" in states and trio.current_time() - asked >= STATUS_EVERY:
                assert self.services is not None
                self.services.reconcile_soon()

    # -- reports ------------------------------------------------------------------------------

    def _sa_status(self) -> dict:
        """SA state of every planned peer connection, from the last list-sas, by lease key."""
        out = {}
        for key, (_, _, plan) in self._plans.items():
            conn = next((o for o in plan.objects if isinstance(o, ConnSpec)), None)
            if conn is not None:
                out[key] = self.charon.peer_status(conn)
        return out

    @hookimpl
    def overlay_report(self) -> dict:
        states: dict[str, int] = {}
        for status in self._sa_status().values():
            states[status.state] = states.get(status.state, 0) + 1
        return {**super().overlay_report(),
                "ipsec": {"mode": self.mode, "vici": self.paths.uri, "sas": states}}

    @hookimpl
    def overlay_peer_status(self) -> dict[str, PeerStatus]:
        out = super().overlay_peer_status()
        for key, status in self._sa_status().items():
            out[key] = PeerStatus(status.state, {**out[key].detail, **status.detail()})
        return out
