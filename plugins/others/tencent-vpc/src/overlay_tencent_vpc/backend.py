"""The ``tencent-vpc`` backend: this node's subnet routed by a TencentCloud VPC route table.

Desired state is per node, not per peer: one route (destination = the node's subnet, next hop =
this CVM) in one VPC route table, kept by core's reconcile machinery (``ReconcilingBackend``)
through ``VpcRouteTarget``. Peers need nothing on this node (the VPC router carries their
traffic), so their plan is empty and peer events cost no API call. Like Flannel's, the lease
carries no ``BackendType``.

Life: at the first lease, the instance metadata is read, the API client opened and the route
made right at once (one DescribeRouteTables, a CreateRoutes when missing), so refused
credentials or a wrong ``RouteTableId`` stop the agent with one line, while an unreachable API
only leaves the node not ready (``/readyz`` says why) until a reconcile gets through. Every
reconcile (``--reconcile-interval``) does one DescribeRouteTables and writes only what differs;
a lease change deletes the old route and creates the new one.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

from overlay_core import ConfigError, LeaseRequest, OverlayError, PeerPlan, ReconcilingBackend, hookimpl
from overlay_core.retry import OutageLog
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily

from .cloud import RetryPolicy, VpcApi
from .metadata import InstanceMetadata, read_instance_metadata
from .options import BACKEND, OPTION_NAMES, TencentOptions, parse_options
from .routes import VpcRouteTarget

LOGGER = logging.getLogger("overlay.tencent-vpc")

PEER_MODE = "vpc-routed"  # how every peer is reached: through the VPC router, nothing on this node


class TencentVpcBackend(ReconcilingBackend):
    type = BACKEND
    option_names = OPTION_NAMES  # core checks the keys (misspelt ones refused with a suggestion)
    lease_type = ""  # Flannel's tencent-vpc lease has no BackendType
    retry = RetryPolicy()  # per API call, within one converge

    @classmethod
    def parse_options(cls, config) -> TencentOptions:
        return parse_options(config.backend, os.environ)

    def __init__(self, node, services=None) -> None:
        super().__init__(node, services)
        self.options: TencentOptions
        self.metadata: InstanceMetadata | None = None
        self.api: VpcApi | None = None
        self.target: VpcRouteTarget | None = None
        self.problem: str | None = None  # why the last setup or converge failed (metadata, API, table)
        self._started = False
        logging.getLogger("httpx").setLevel(max(logging.getLogger("httpx").level, logging.WARNING))  # a line a call
        self._outage = OutageLog(LOGGER, "the VPC route table", note="routes in the VPC stay as they are")
        if services is not None and services.registry is not None:
            services.registry.register(VpcCollector(self))

    # -- set-up --------------------------------------------------------------------------------

    async def _open(self) -> VpcRouteTarget:
        """Read the instance metadata and open the API client, once (again after a failure)."""
        if self.target is not None:
            return self.target
        self.metadata = await read_instance_metadata(self.options.metadata_url)
        self.api = VpcApi(self.options, self.metadata.region, retry=self.retry)
        self.target = VpcRouteTarget(
            self.api,
            vpc_id=self.metadata.vpc_id,
            node_address=self.node.iface.public_ip,
            network=self.node.config.network,
            table_id=self.options.route_table_id,
            limit=self.options.route_table_limit,
        )
        LOGGER.info("instance in %s, VPC %s; VPC API %s", self.metadata.region, self.metadata.vpc_id,
                    self.options.api_endpoint)
        return self.target

    async def prepare(self) -> None:
        await self._open()

    def targets(self) -> list:
        return [self.target] if self.target is not None else []

    async def cleanup_targets(self) -> list:
        """For ``overlay-core cleanup``: the VPC route table, through the instance metadata and the
        API as the agent opens them (this node's own routes are what it then deletes)."""
        return [await self._open()]

    # -- desired state -------------------------------------------------------------------------

    def plan(self, peer) -> PeerPlan:
        return PeerPlan(PEER_MODE)

    def desired(self, peers: Sequence[Any]) -> list[Any]:
        out = super().desired(peers)
        lease = self.node.lease
        if self.target is not None and lease is not None and lease.subnet is not None:
            out.append(self.target.route_for(lease.subnet))
        return out

    async def converge(self, peers: Sequence[Any], *, stop_on_config_error: bool = False) -> tuple[int, int]:
        """Core's converge; a failure (API down, refused, metadata unreadable) is one line and a
        reason in ``/readyz``, and the reconcile timer tries again. ``stop_on_config_error``
        (at start): refused credentials, an unknown table or a foreign VPC are raised instead."""
        try:
            changed = await super().converge(peers)
        except OverlayError as exc:
            self.problem = str(exc)
            if isinstance(exc, ConfigError):  # refused key (VpcAuthError), unknown table: needs a person
                if stop_on_config_error:
                    raise
                LOGGER.error("%s", exc)
            else:
                self._outage.failed(exc)
            return 0, 0
        self.problem = None
        self._outage.recovered()
        return changed

    # -- hooks ---------------------------------------------------------------------------------

    @hookimpl
    def overlay_network_config(self, config, node) -> None:
        if config.ipv6 is not None or config.network is None:
            raise ConfigError(f"{BACKEND}: IPv6 is not supported (the VPC routes IPv4 pod subnets only); "
                              "remove EnableIPv6/IPv6Network or choose another backend")
        if node.iface.public_ip is None:
            raise ConfigError(f"{BACKEND}: the external interface {node.iface.name} has no IPv4 address "
                              "to route the node's subnet to")

    @hookimpl
    def overlay_lease_request(self, node) -> LeaseRequest:
        return LeaseRequest(backend_type="", mtu=node.iface.mtu)  # no encapsulation: the external MTU

    @hookimpl
    async def overlay_lease_acquired(self, lease) -> None:
        if self._started:  # a new subnet: the next converge moves the route
            LOGGER.info("lease changed to %s: moving the VPC route", lease.subnet)
            if self.services is not None:
                self.services.reconcile_soon()
            return
        self._started = True
        # the route at once (no peer is known yet, and peers add no object anyway)
        await self.converge([], stop_on_config_error=True)

    @hookimpl
    async def overlay_shutdown(self) -> None:
        if self.api is not None:
            await self.api.aclose()

    @hookimpl
    def overlay_report(self) -> dict:
        facts: dict[str, Any] = {**super().overlay_report()}
        target = self.target
        if target is not None:
            usage = target.table_usage
            facts["vpc"] = {"vpc_id": target.vpc_id, "route_table": target.table_id,
                            "routes_used": usage[0] if usage else None, "route_table_limit": target.limit}
        reason = self.problem or (target.problem if target is not None else None)
        if reason:
            facts["not_ready"] = reason
        return facts


class VpcCollector:
    """Prometheus at scrape time: API calls and retries per action, and the route table's usage."""

    def __init__(self, backend: TencentVpcBackend) -> None:
        self.backend = backend

    def describe(self):
        return []

    def collect(self):
        calls = CounterMetricFamily("overlay_tencent_vpc_api_calls", "VPC API requests made, by action",
                                    labels=["action"])
        retries = CounterMetricFamily("overlay_tencent_vpc_api_retries",
                                      "VPC API requests retried after throttling, a server error or a network error",
                                      labels=["action"])
        api = self.backend.api
        for action, count in sorted((api.calls if api else {}).items()):
            calls.add_metric([action], count)
        for action, count in sorted((api.retries if api else {}).items()):
            retries.add_metric([action], count)
        yield calls
        yield retries
        target = self.backend.target
        usage = target.table_usage if target is not None else None
        if usage is not None:
            yield GaugeMetricFamily("overlay_tencent_vpc_route_table_routes",
                                    "User routes in the route table at the last describe", value=usage[0])
            yield GaugeMetricFamily("overlay_tencent_vpc_route_table_limit", "RouteTableLimit", value=usage[1])
