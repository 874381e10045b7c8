"""The node's own VPC route as desired state: a reconcile target over one VPC route table.

Flannel's flow, kept for the agent's whole life: the own route is destination = own subnet,
gateway type ``NORMAL_CVM``, gateway id = the node's address. A disabled own route is deleted
and created again; an absent one is created. Beyond Flannel:

* every converge (core's reconcile timer) restores a route deleted or disabled in the console;
* a lease change deletes the old route and creates the new one (both are "ours": inside the
  cluster network, pointing at this node);
* before creating, the table's user routes are counted against ``RouteTableLimit``; a full table
  is a one-line problem naming the table and the limit (``problem``, for ``/readyz``), no call;
* a route for the same destination through another gateway is a conflict: reported, never
  overwritten or deleted;
* one DescribeRouteTables per converge (``dump``) and no write when nothing differs.

The target follows core's reconcile-target shape (``name``, ``owns``, ``accepts``, ``dump``,
``apply``); objects are ``VpcRoute`` values keyed by destination.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, ip_network

from overlay_core import ConfigError, OverlayError

from .cloud import ApiRouteTable, VpcApi, VpcApiError, VpcAuthError
from .options import BACKEND, DEFAULT_ROUTE_TABLE_LIMIT

log = logging.getLogger(__name__)

GATEWAY_TYPE = "NORMAL_CVM"
USER_ROUTE = "USER"
ROUTE_DESCRIPTION = "overlay tencent-vpc"


@dataclass(frozen=True)
class VpcRoute:
    """A route entry. ``route_id`` (known for dumped routes only) is not part of the value."""

    destination: IPv4Network
    gateway_id: str
    gateway_type: str = GATEWAY_TYPE
    enabled: bool = True
    route_id: int | None = field(default=None, compare=False)

    @property
    def key(self) -> tuple[str, IPv4Network]:
        return ("vpc-route", self.destination)


def _parse_destination(text: str) -> IPv4Network | None:
    try:
        net = ip_network(text, strict=False)
    except ValueError:
        return None
    return net if net.version == 4 else None


def _user_routes(table: ApiRouteTable) -> int:
    """Entries that count against the table's limit: user routes (system/CCN ones do not)."""
    return sum(1 for r in table.routes if r.route_type in (USER_ROUTE, ""))


class VpcRouteTarget:
    """Keeps this node's route in one VPC route table right.

    ``table_id`` None means the first route table of ``vpc_id`` (as Flannel), resolved at the first
    dump and kept. ``problem`` is None when the last converge left nothing wrong, else one line
    saying why the node is not ready (API unreachable, table full, conflicting route).
    """

    name = "vpc-routes"

    def __init__(
        self,
        api: VpcApi,
        *,
        vpc_id: str,
        node_address: IPv4Address,
        network: IPv4Network,
        table_id: str | None = None,
        limit: int = DEFAULT_ROUTE_TABLE_LIMIT,
    ) -> None:
        self.api = api
        self.vpc_id = vpc_id
        self.node_address = node_address
        self.network = network
        self.table_id = table_id
        self.limit = limit
        self._table: ApiRouteTable | None = None  # the last dump, for capacity and conflicts
        self._used: int | None = None  # user routes in the table at the last dump
        self._api_problem: str | None = None
        self._route_problems: dict[tuple[str, IPv4Network], str] = {}

    # -- the desired state ------------------------------------------------------------------
    def route_for(self, subnet: IPv4Network) -> VpcRoute:
        """The own route for the node's leased ``subnet``."""
        return VpcRoute(destination=subnet, gateway_id=str(self.node_address))

    @property
    def table_usage(self) -> tuple[int, int] | None:
        """(user routes in the table at the last dump, the limit), for a gauge; None before a dump."""
        return None if self._used is None else (self._used, self.limit)

    @property
    def problem(self) -> str | None:
        parts = [p for p in (self._api_problem, *self._route_problems.values()) if p]
        return "; ".join(parts) or None

    # -- reconcile-target protocol ----------------------------------------------------------
    def accepts(self, obj: object) -> bool:
        return isinstance(obj, VpcRoute)

    def owns(self, obj: VpcRoute) -> bool:
        """Ours: through this node as NORMAL_CVM, for a destination inside the cluster network."""
        return (
            obj.gateway_type == GATEWAY_TYPE
            and obj.gateway_id == str(self.node_address)
            and obj.destination.subnet_of(self.network)
        )

    async def dump(self) -> list[VpcRoute]:
        """One DescribeRouteTables of the table; returns the routes we own."""
        try:
            table = await self._describe()
        except OverlayError as e:
            self._api_problem = str(e)
            raise
        self._api_problem = None
        self._table = table
        self._used = _user_routes(table)
        owned = [r for r in self._routes(table) if self.owns(r)]
        present = {r.key for r in owned if r.enabled}
        self._route_problems = {k: v for k, v in self._route_problems.items() if k not in present}
        return owned

    async def apply(self, to_set: list[VpcRoute], to_delete: list[VpcRoute]) -> int:
        """Delete ``to_delete``, then create ``to_set`` (replacing a disabled own route); returns failures.

        Works on the table of the last ``dump`` (describing again only when a write has happened
        since, so an incremental apply without a dump is right too). Routes to delete are matched by
        key among the routes we own, so desired-state objects without ``route_id`` work as well.
        Creation is refused, with a problem recorded, for a destination routed elsewhere
        (conflict) and when the table would exceed ``limit``.
        """
        if self._table is None:
            await self.dump()
        assert self._table is not None
        table = self._table
        existing: dict[tuple[str, IPv4Network], list[VpcRoute]] = {}
        for r in self._routes(table):
            existing.setdefault(r.key, []).append(r)
        deletes: dict[int, VpcRoute] = {}  # by RouteId
        for route in to_delete:
            deletes.update((r.route_id, r) for r in existing.get(route.key, ()) if self.owns(r))
        failed = 0
        problems: dict[tuple[str, IPv4Network], str] = {}
        creates: list[VpcRoute] = []
        for route in to_set:
            same = existing.get(route.key, [])
            other = next((r for r in same if not self.owns(r)), None)
            if other is not None:
                problems[route.key] = (
                    f"{BACKEND}: route table {table.table_id} already routes {route.destination} through "
                    f"{other.gateway_type} {other.gateway_id}, not this node {self.node_address}; "
                    "remove that route (it is left untouched)"
                )
                failed += 1
                continue
            # ours but different (disabled): Flannel deletes and creates it again
            deletes.update((r.route_id, r) for r in same)
            creates.append(route)
        used = _user_routes(table) - len(deletes)
        if creates and used + len(creates) > self.limit:
            for route in creates:
                problems[route.key] = (
                    f"{BACKEND}: route table {table.table_id} is full ({used} of RouteTableLimit {self.limit} "
                    f"routes), cannot add {route.destination}; free entries or raise the limit"
                )
            failed += len(creates)
            creates = []
        self._route_problems = problems
        for text in problems.values():
            log.error("%s", text)
        if deletes or creates:
            self._table = None  # written: the next apply without a dump describes first
        if deletes:
            failed += await self._write("DeleteRoutes", list(deletes.values()), table.table_id)
        if creates:
            failed += await self._write("CreateRoutes", creates, table.table_id)
        return failed

    # -- helpers ----------------------------------------------------------------------------
    async def _write(self, action: str, routes: list[VpcRoute], table_id: str) -> int:
        try:
            if action == "DeleteRoutes":
                await self.api.delete_routes(table_id, [r.route_id for r in routes if r.route_id is not None])
            else:
                triples = [(str(r.destination), r.gateway_type, str(r.gateway_id)) for r in routes]
                await self.api.create_routes(table_id, triples, ROUTE_DESCRIPTION)
        except VpcApiError as e:
            self._api_problem = str(e)
            if isinstance(e, VpcAuthError):
                raise
            log.error("%s", e)
            return len(routes)
        log.info("%s: %s in %s", action, ", ".join(str(r.destination) for r in routes), table_id)
        return 0

    async def _describe(self) -> ApiRouteTable:
        if self.table_id is None:
            tables = await self.api.describe_route_tables(vpc_id=self.vpc_id)
            if not tables:
                raise ConfigError(f"{BACKEND}: VPC {self.vpc_id} has no route table; set RouteTableId or create one")
            self.table_id = tables[0].table_id
            log.info("using route table %s, the first of VPC %s", self.table_id, self.vpc_id)
            return tables[0]
        missing = ConfigError(f"{BACKEND}: route table {self.table_id} not found; check RouteTableId")
        try:
            tables = await self.api.describe_route_tables(table_id=self.table_id)
        except VpcApiError as e:
            if e.code.startswith(("ResourceNotFound", "InvalidParameterValue")):
                raise missing from None
            raise
        table = next((t for t in tables if t.table_id == self.table_id), None)
        if table is None:
            raise missing
        if table.vpc_id and table.vpc_id != self.vpc_id:
            raise ConfigError(
                f"{BACKEND}: route table {self.table_id} belongs to {table.vpc_id}, not this node's VPC "
                f"{self.vpc_id}; check RouteTableId"
            )
        return table

    @staticmethod
    def _routes(table: ApiRouteTable) -> Iterable[VpcRoute]:
        for r in table.routes:
            destination = _parse_destination(r.destination)
            if destination is None:
                continue  # IPv6 or malformed entries are never ours
            yield VpcRoute(destination, r.gateway_id, r.gateway_type, r.enabled, route_id=r.route_id)
