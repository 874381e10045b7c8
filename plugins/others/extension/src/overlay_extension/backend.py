"""The ``extension`` backend: Flannel's prototyping backend, every step a shell command.

PreStartupCommand runs before the lease is written and its output is the lease's BackendData
(a JSON string, as Flannel writes it); PostStartupCommand runs once the node holds its subnet;
SubnetAddCommand and SubnetRemoveCommand run per peer through the ``extension`` reconcile
target (``target.py``), so a failed add is retried by core's periodic reconcile. A failing
start-up command stops the agent with one line, as in Flannel.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from overlay_core import (
    Capabilities,
    Lease,
    LeaseRequest,
    NetworkConfig,
    Node,
    PeerPlan,
    PeerStatus,
    ReconcilingBackend,
    hookimpl,
)
from overlay_core.errors import OverlayError
from overlay_core.services import Services

from .commands import run_command, startup_env
from .options import BACKEND, OPTION_NAMES, ExtensionOptions, parse_options
from .record import ConnectedRecord
from .target import CommandTarget, PeerCommand

LOGGER = logging.getLogger("overlay.extension")

RESTART_NOTE = (
    "at every start PreStartupCommand and PostStartupCommand run again and SubnetAddCommand runs again "
    "for every peer: whether pods keep their traffic meanwhile depends on the commands (Flannel's host-gw "
    "example keeps its routes; its vxlan example deletes and re-creates its device)"
)


class ExtensionBackend(ReconcilingBackend):
    type = BACKEND
    option_names = OPTION_NAMES
    # Nothing can be assumed of arbitrary shell commands: no IPv6 (the variables are passed, the
    # commands may ignore them), no encryption, no data path kept across a restart for sure, and
    # no way to see (so to repair) what a command did.
    capabilities = Capabilities(survives_restart=False, restart_note=RESTART_NOTE, repairs_drift=False)
    options: ExtensionOptions

    def __init__(self, node: Node, services: Services | None = None) -> None:
        super().__init__(node, services)
        record = ConnectedRecord(services.path("extension", "connected.json")) if services is not None else None
        self.commands = CommandTarget(self.options, record=record)
        self._adopted = record is None

    @classmethod
    def parse_options(cls, config: NetworkConfig) -> ExtensionOptions:
        return parse_options(config)

    def targets(self) -> list[CommandTarget]:
        return [self.commands]

    def plan(self, peer: Lease) -> PeerPlan:
        try:
            return PeerPlan("commands", (PeerCommand.of(peer),))
        except ValueError as exc:  # Flannel logs and skips such a peer too
            return PeerPlan("skipped", (), f"{exc}; no command is run for it")

    async def converge(self, peers: Sequence[Lease]) -> tuple[int, int]:
        """The first converge also takes over what the previous agent connected (``record.py``)."""
        if not self._adopted and self.commands.record is not None:
            previous = await self.commands.record.load()
            self.commands.adopt(previous, {obj.key: obj for obj in self.desired(peers)})
            self._adopted = True
        return await super().converge(peers)

    @hookimpl
    def overlay_network_config(self, config: NetworkConfig, node: Node) -> None:
        if not self.options.subnet_add:
            LOGGER.warning("extension: no SubnetAddCommand: peers' subnets are not connected by this node")
        if self.options.shutdown:
            LOGGER.warning("extension: ShutdownCommand is not run (Flannel never ran it either): the node's "
                           "state stays when the agent stops; remove it by hand when retiring the node")

    @hookimpl
    async def overlay_lease_request(self, node: Node) -> LeaseRequest:
        """PreStartupCommand's output is the BackendData (a JSON string); none without the command."""
        data = None
        if self.options.pre_startup:
            result = await run_command(self.options.pre_startup, {})
            if not result.ok:
                raise OverlayError(f"extension: PreStartupCommand failed ({result.summary()}); fix the "
                                   "command in the network config (it runs before the lease is taken)")
            LOGGER.info("extension: PreStartupCommand: %s (the lease's BackendData)", result.summary())
            data = result.output
        return LeaseRequest(BACKEND, node.iface.mtu, data)

    @hookimpl
    async def overlay_lease_acquired(self, lease: Lease, node: Node) -> None:
        if not self.options.post_startup:
            return
        attrs = lease.attrs
        env = startup_env(node.config.network, lease.subnet, lease.ipv6_subnet, attrs.public_ip, attrs.public_ipv6)
        result = await run_command(self.options.post_startup, env)
        if not result.ok:
            raise OverlayError(f"extension: PostStartupCommand failed for subnet {lease.describe()} "
                               f"({result.summary()}); fix the command in the network config")
        LOGGER.info("extension: PostStartupCommand: %s", result.summary())

    @hookimpl
    def overlay_report(self) -> dict:
        return {**super().overlay_report(), "failing_commands": len(self.commands.failing)}

    @hookimpl
    def overlay_peer_status(self) -> dict[str, PeerStatus]:
        """``programmed`` once the add command succeeded; ``failing`` with the last error while it does not."""
        out = super().overlay_peer_status()
        for key, status in out.items():
            failure = self.commands.failing.get(key)
            if failure is not None:
                out[key] = PeerStatus("failing", {**status.detail, "command": failure.option,
                                                  "attempts": failure.attempts, "error": failure.summary})
            elif status.state == "programmed" and key not in self.commands.added:
                out[key] = PeerStatus("pending", status.detail)
        return out
