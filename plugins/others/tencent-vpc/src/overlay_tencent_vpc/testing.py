"""A stand-in TencentCloud VPC API and instance metadata service, for tests, the bench and the lab.

``FakeVpc`` speaks the VPC API 2017-03-12 over HTTP as the SDK calls it (POST /, JSON body,
``X-TC-Action``/``X-TC-Version``/``X-TC-Region``/``X-TC-Timestamp``, answers
``{"Response": {..., "RequestId"}}`` and errors ``{"Response": {"Error": {"Code", "Message"}}}``).
It verifies every request's TC3-HMAC-SHA256 signature against the credentials it was given and
keeps route tables in memory. Supported actions: DescribeRouteTables (``vpc-id`` /
``route-table-id`` filters, ``RouteTableIds``, ``Offset``/``Limit``), CreateRoutes, DeleteRoutes,
DisableRoutes (the console's "disable", for the lab).
Console edits are methods (``console_disable``, ``console_delete``, ``console_add``).

Faults (``FakeVpc.faults``): latency per call, the next N calls throttled, the next N calls
answered 502, or down (connections closed without an answer); ``denied`` actions answer
``UnauthorizedOperation`` as a CAM policy without them would. ``calls`` counts requests per
action. ``on_change(RouteChange)`` runs after every change of a table (API or console), in the
server's request thread while the state lock is held (so changes arrive in order; keep it short):
the lab applies it to a router namespace's kernel table.

Servers run in a thread on 127.0.0.1 (or the host given) and stop cleanly (``with`` or ``stop()``).
``FakeCloud`` bundles identities that belong together; ``KernelRoutes`` mirrors the table into a
named namespace's kernel table (the lab's VPC router); ``python -m overlay_tencent_vpc.testing``
serves both stand-ins as a process.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import logging
import os
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from ipaddress import ip_network
from typing import Any
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

NETNS_DIR = "/var/run/netns"
API_VERSION = "2017-03-12"
SERVICE = "vpc"
MAX_CLOCK_SKEW = 300  # seconds, as Tencent's AuthFailure.SignatureExpire

ApiAnswer = tuple[int, dict[str, Any]]


class ApiFault(Exception):
    """An error answer: ``{"Error": {"Code": code, "Message": message}}``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


# -- TC3-HMAC-SHA256, checked from the server's side --------------------------------------------


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def tc3_signature(secret_key: str, date: str, service: str, string_to_sign: str) -> str:
    """The TC3 signature: HMAC chain TC3+key → date → service → 'tc3_request' → string to sign."""
    key = _hmac(("TC3" + secret_key).encode(), date)
    key = _hmac(key, service)
    key = _hmac(key, "tc3_request")
    return hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()


def verify_tc3(
    method: str,
    path: str,
    query: str,
    headers: dict[str, str],
    body: bytes,
    secrets: dict[str, str],
    now: float,
) -> None:
    """Raise ``ApiFault`` unless ``headers['authorization']`` is a valid TC3 signature by a known key.

    ``headers`` has lower-case names. Checks the credential scope (date of X-TC-Timestamp, service
    ``vpc``), the clock skew and the HMAC over the canonical request of the signed headers.
    """
    auth = headers.get("authorization", "")
    algorithm, _, rest = auth.partition(" ")
    fields = dict(part.strip().split("=", 1) for part in rest.split(",") if "=" in part)
    if algorithm != "TC3-HMAC-SHA256" or not {"Credential", "SignedHeaders", "Signature"} <= fields.keys():
        raise ApiFault("AuthFailure.InvalidAuthorization", "Authorization header is not a TC3-HMAC-SHA256 one.")
    scope = fields["Credential"].split("/")
    if len(scope) != 4 or scope[3] != "tc3_request":
        raise ApiFault("AuthFailure.InvalidAuthorization", "Malformed credential scope.")
    secret_id, date, service, _ = scope
    if secret_id not in secrets:
        raise ApiFault("AuthFailure.SecretIdNotFound", "The SecretId is not found.")
    try:
        timestamp = int(headers.get("x-tc-timestamp", ""))
    except ValueError:
        raise ApiFault("MissingParameter", "X-TC-Timestamp is missing.") from None
    if abs(now - timestamp) > MAX_CLOCK_SKEW:
        raise ApiFault("AuthFailure.SignatureExpire", "Signature expired.")
    if date != datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d") or service != SERVICE:
        raise ApiFault("AuthFailure.SignatureFailure", "Credential scope does not match the request.")
    signed = fields["SignedHeaders"].split(";")
    if "content-type" not in signed or "host" not in signed:
        raise ApiFault("AuthFailure.SignatureFailure", "content-type and host must be signed.")
    canonical_headers = "".join(f"{name}:{headers.get(name, '').strip().lower()}\n" for name in signed)
    canonical = "\n".join(
        (method, path, query, canonical_headers, ";".join(signed), hashlib.sha256(body).hexdigest())
    )
    string_to_sign = "\n".join(
        ("TC3-HMAC-SHA256", str(timestamp), f"{date}/{service}/tc3_request",
         hashlib.sha256(canonical.encode()).hexdigest())
    )
    expected = tc3_signature(secrets[secret_id], date, service, string_to_sign)
    if not hmac.compare_digest(expected, fields["Signature"]):
        raise ApiFault("AuthFailure.SignatureFailure", "The provided credentials could not be validated.")


# -- route tables in memory ---------------------------------------------------------------------


@dataclass
class FakeRoute:
    destination: str
    gateway_type: str
    gateway_id: str
    route_id: int
    route_item_id: str
    description: str = ""
    enabled: bool = True
    route_type: str = "USER"

    def to_api(self, table_id: str) -> dict[str, Any]:
        return {
            "DestinationCidrBlock": self.destination,
            "GatewayType": self.gateway_type,
            "GatewayId": self.gateway_id,
            "RouteId": self.route_id,
            "RouteItemId": self.route_item_id,
            "RouteDescription": self.description,
            "Enabled": self.enabled,
            "RouteType": self.route_type,
            "RouteTableId": table_id,
            "DestinationIpv6CidrBlock": "",
            "CreatedTime": "2026-01-01 00:00:00",
        }


@dataclass
class FakeTable:
    table_id: str
    vpc_id: str
    routes: list[FakeRoute] = field(default_factory=list)
    main: bool = False


@dataclass(frozen=True)
class RouteChange:
    """What changed: ``kind`` is 'create', 'delete' or 'disable'; ``route`` is a copy (after the change)."""

    kind: str
    table_id: str
    route: FakeRoute


@dataclass
class Faults:
    """Injected faults; counters count down as calls consume them."""

    latency: float = 0.0  # seconds added to every call
    throttle: int = 0  # the next N calls answer RequestLimitExceeded
    server_error: int = 0  # the next N calls answer HTTP 502
    down: bool = False  # connections are closed without an answer


class FakeVpc:
    """The VPC state and the API logic, independent of HTTP (``handle``)."""

    def __init__(
        self,
        credentials: dict[str, str],
        *,
        region: str = "ap-guangzhou",
        table_limit: int = 200,
        on_change: Callable[[RouteChange], None] | None = None,
    ) -> None:
        self.credentials = dict(credentials)
        self.region = region
        self.table_limit = table_limit  # the API's own cap, separate from the client's RouteTableLimit
        self.on_change = on_change
        self.tables: dict[str, FakeTable] = {}
        self.faults = Faults()
        self.denied: set[str] = set()  # actions the key's CAM policy does not allow
        self.calls: Counter[str] = Counter()
        self.lock = threading.RLock()
        self._ids = itertools.count(1)

    # -- set-up and console edits ------------------------------------------------------------
    def add_table(self, table_id: str, vpc_id: str, *, main: bool = False) -> FakeTable:
        with self.lock:
            table = self.tables[table_id] = FakeTable(table_id, vpc_id, main=main)
            return table

    def routes(self, table_id: str) -> list[FakeRoute]:
        with self.lock:
            return [FakeRoute(**vars(r)) for r in self.tables[table_id].routes]

    def console_add(self, table_id: str, destination: str, gateway_id: str, *,
                    gateway_type: str = "NORMAL_CVM", enabled: bool = True) -> FakeRoute:
        with self.lock:
            route = self._new_route(destination, gateway_type, gateway_id, "console")
            route.enabled = enabled
            self.tables[table_id].routes.append(route)
            self._changed("create", table_id, route)
            return route

    def console_delete(self, table_id: str, destination: str) -> None:
        with self.lock:
            table = self.tables[table_id]
            for route in [r for r in table.routes if r.destination == destination]:
                table.routes.remove(route)
                self._changed("delete", table_id, route)

    def console_disable(self, table_id: str, destination: str) -> None:
        with self.lock:
            for route in self.tables[table_id].routes:
                if route.destination == destination and route.enabled:
                    route.enabled = False
                    self._changed("disable", table_id, route)

    # -- the API ------------------------------------------------------------------------------
    def handle(self, action: str, params: dict[str, Any]) -> dict[str, Any]:
        """Run one verified action; returns the Response body without RequestId or raises ApiFault."""
        handler = {
            "DescribeRouteTables": self._describe,
            "CreateRoutes": self._create,
            "DeleteRoutes": self._delete,
            "DisableRoutes": self._disable,
        }.get(action)
        if handler is None:
            raise ApiFault("InvalidAction", f"The action {action} is not supported by the fake.")
        with self.lock:
            return handler(params)

    def _describe(self, params: dict[str, Any]) -> dict[str, Any]:
        tables = list(self.tables.values())
        ids = params.get("RouteTableIds")
        if ids:
            unknown = [i for i in ids if i not in self.tables]
            if unknown:
                raise ApiFault("ResourceNotFound", f"The route table {unknown[0]} does not exist.")
            tables = [self.tables[i] for i in ids]
        for f in params.get("Filters") or ():
            values = set(f.get("Values") or ())
            if f.get("Name") == "vpc-id":
                tables = [t for t in tables if t.vpc_id in values]
            elif f.get("Name") == "route-table-id":
                tables = [t for t in tables if t.table_id in values]
            else:
                raise ApiFault("InvalidParameterValue", f"Filter {f.get('Name')} is not supported by the fake.")
        try:
            offset, limit = int(params.get("Offset") or 0), int(params.get("Limit") or 20)
        except ValueError:
            raise ApiFault("InvalidParameterValue", "Offset and Limit must be numbers.") from None
        if not 0 < limit <= 100:
            raise ApiFault("InvalidParameterValue.Range", "Limit must be from 1 to 100.")
        page = tables[offset : offset + limit]
        return {
            "TotalCount": len(tables),
            "RouteTableSet": [
                {
                    "VpcId": t.vpc_id,
                    "RouteTableId": t.table_id,
                    "RouteTableName": t.table_id,
                    "Main": t.main,
                    "AssociationSet": [],
                    "RouteSet": [r.to_api(t.table_id) for r in t.routes],
                    "CreatedTime": "2026-01-01 00:00:00",
                    "TagSet": [],
                    "LocalCidrForCcn": [],
                }
                for t in page
            ],
        }

    def _table(self, params: dict[str, Any]) -> FakeTable:
        table = self.tables.get(params.get("RouteTableId") or "")
        if table is None:
            raise ApiFault("ResourceNotFound", f"The route table {params.get('RouteTableId')} does not exist.")
        return table

    def _create(self, params: dict[str, Any]) -> dict[str, Any]:
        table = self._table(params)
        new = params.get("Routes") or []
        if not new:
            raise ApiFault("MissingParameter", "Routes is required.")
        if len(table.routes) + len(new) > self.table_limit:
            raise ApiFault("LimitExceeded", f"The route table {table.table_id} allows {self.table_limit} routes.")
        made = []
        for r in new:
            destination = r.get("DestinationCidrBlock") or ""
            try:
                ip_network(destination)
            except ValueError:
                raise ApiFault("InvalidParameterValue.Malformed", f"Bad destination {destination!r}.") from None
            if any(x.destination == destination for x in [*table.routes, *made]):
                raise ApiFault("InvalidParameterValue.Duplicate", f"A route to {destination} already exists.")
            if r.get("GatewayType") not in ("NORMAL_CVM", "VPN", "DIRECTCONNECT", "PEERCONNECTION", "HAVIP",
                                            "NAT", "EIP", "CCN", "LOCAL_GATEWAY"):
                raise ApiFault("InvalidParameterValue", f"Bad GatewayType {r.get('GatewayType')!r}.")
            made.append(self._new_route(destination, r["GatewayType"], r.get("GatewayId") or "",
                                        r.get("RouteDescription") or ""))
        table.routes.extend(made)
        for route in made:
            self._changed("create", table.table_id, route)
        return {"TotalCount": len(made), "RouteTableSet": self._describe({"RouteTableIds": [table.table_id]})[
            "RouteTableSet"]}

    def _delete(self, params: dict[str, Any]) -> dict[str, Any]:
        table = self._table(params)
        wanted = params.get("Routes") or []
        if not wanted:
            raise ApiFault("MissingParameter", "Routes is required.")
        gone = []
        for w in wanted:
            match = next((r for r in table.routes if r.route_id == w.get("RouteId")
                          or (w.get("RouteItemId") and r.route_item_id == w.get("RouteItemId"))), None)
            if match is None:
                raise ApiFault("ResourceNotFound", f"No route {w} in {table.table_id}.")
            gone.append(match)
        for route in gone:
            table.routes.remove(route)
            self._changed("delete", table.table_id, route)
        return {"RouteSet": [r.to_api(table.table_id) for r in gone]}

    def _disable(self, params: dict[str, Any]) -> dict[str, Any]:
        """DisableRoutes by ``RouteIds``, as the console's "disable" button does."""
        table = self._table(params)
        ids = params.get("RouteIds") or []
        if not ids:
            raise ApiFault("MissingParameter", "RouteIds is required.")
        routes = [next((r for r in table.routes if r.route_id == i), None) for i in ids]
        if None in routes:
            raise ApiFault("ResourceNotFound", f"No route among {ids} in {table.table_id}.")
        for route in routes:
            if route.enabled:
                route.enabled = False
                self._changed("disable", table.table_id, route)
        return {}

    def _new_route(self, destination: str, gateway_type: str, gateway_id: str, description: str) -> FakeRoute:
        n = next(self._ids)
        return FakeRoute(destination, gateway_type, gateway_id, n, f"rti-{n:08x}", description)

    def _changed(self, kind: str, table_id: str, route: FakeRoute) -> None:
        if self.on_change is not None:
            self.on_change(RouteChange(kind, table_id, FakeRoute(**vars(route))))

    # -- one HTTP request ---------------------------------------------------------------------
    def serve_request(self, method: str, target: str, headers: dict[str, str], body: bytes) -> ApiAnswer | None:
        """Answer one HTTP request (headers lower-case); None means: drop the connection."""
        action = headers.get("x-tc-action", "")
        with self.lock:
            self.calls[action] += 1
            faults = self.faults
            latency, down = faults.latency, faults.down
            throttled = faults.throttle > 0
            failing = not throttled and faults.server_error > 0
            faults.throttle -= throttled
            faults.server_error -= failing
        if latency:
            time.sleep(latency)
        if down:
            return None
        if failing:
            return 502, {"message": "bad gateway (injected)"}
        request_id = str(uuid.uuid4())
        try:
            if throttled:
                raise ApiFault("RequestLimitExceeded", "Your current request times reached the limit (injected).")
            url = urlsplit(target)
            verify_tc3(method, url.path, url.query, headers, body, self.credentials, time.time())
            if action in self.denied:
                raise ApiFault("UnauthorizedOperation", f"The key is not authorized to perform {action} (CAM).")
            if headers.get("x-tc-version") != API_VERSION:
                raise ApiFault("NoSuchVersion", f"Version {headers.get('x-tc-version')} is not {API_VERSION}.")
            if headers.get("x-tc-region") != self.region:
                raise ApiFault("UnsupportedRegion", f"Region {headers.get('x-tc-region')!r} is not served here.")
            if method != "POST" or not headers.get("content-type", "").startswith("application/json"):
                raise ApiFault("InvalidParameter", "Only POST with a JSON body is supported by the fake.")
            try:
                params = json.loads(body or b"{}")
            except ValueError:
                raise ApiFault("InvalidParameter", "The body is not JSON.") from None
            response = self.handle(action, params)
        except ApiFault as e:
            response = {"Error": {"Code": e.code, "Message": str(e)}}
        response["RequestId"] = request_id
        return 200, {"Response": response}


# -- one coherent stand-in cloud ----------------------------------------------------------------


@dataclass(frozen=True)
class FakeCloud:
    """Identities that belong together (key, region, VPC, table, instance) for tests, the bench and the lab."""

    secret_id: str = "AKIDfakeOverlay0001"
    secret_key: str = "fake-secret-key-0001"
    region: str = "ap-fakeland"
    vpc_id: str = "vpc-fake0001"
    table_id: str = "rtb-fake0001"
    mac: str = "52:54:00:12:34:56"
    instance_ip: str = "192.0.2.11"  # the node's private address: the gateway id of its route

    def vpc(self, **kwargs: Any) -> FakeVpc:
        """A ``FakeVpc`` that knows this key and region, holding this VPC's (main) route table."""
        vpc = FakeVpc({self.secret_id: self.secret_key}, region=self.region, **kwargs)
        vpc.add_table(self.table_id, self.vpc_id, main=True)
        return vpc

    def metadata_server(self, host: str = "127.0.0.1", port: int = 0) -> FakeMetadataServer:
        return FakeMetadataServer(region=self.region, mac=self.mac, vpc_id=self.vpc_id, host=host, port=port)

    def backend_config(self, api_url: str, metadata_url: str) -> dict[str, str]:
        """The ``Backend`` options that point a node at the stand-ins."""
        return {"Type": "tencent-vpc", "AccessKeyID": self.secret_id, "AccessKeySecret": self.secret_key,
                "ApiEndpoint": api_url, "MetadataURL": metadata_url}


# -- HTTP servers in a thread -------------------------------------------------------------------


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the default backlog of 5 drops SYNs when a lab's nodes start together (1 s stalls)


class _ThreadedServer:
    """A ThreadingHTTPServer on (host, port) in a daemon thread; ``url`` once started."""

    def __init__(self, handler: type[BaseHTTPRequestHandler], host: str, port: int) -> None:
        self._server = _HTTPServer((host, port), handler)
        self._server.owner = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name=type(self).__name__, daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> _ThreadedServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join()
        self._server.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet: tests and the lab log on their own
        pass

    def _reply(self, status: int, payload: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(payload)
        self.close_connection = True


class _VpcHandler(_Handler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = {k.lower(): v for k, v in self.headers.items()}
        answer = self.server.owner.vpc.serve_request("POST", self.path, headers, body)  # type: ignore[attr-defined]
        if answer is None:
            self.close_connection = True
            return
        status, payload = answer
        self._reply(status, json.dumps(payload).encode(), "application/json")

    do_GET = do_POST


class FakeVpcServer(_ThreadedServer):
    """Serves ``vpc`` (a ``FakeVpc``) over HTTP; pass ``url`` as ``ApiEndpoint``."""

    def __init__(self, vpc: FakeVpc, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(_VpcHandler, host, port)
        self.vpc = vpc


class _MetadataHandler(_Handler):
    def do_GET(self) -> None:
        owner: FakeMetadataServer = self.server.owner  # type: ignore[attr-defined]
        path = self.path.split("?")[0]
        owner.calls[path] += 1
        if owner.down:
            self.close_connection = True
            return
        prefix = "/latest/meta-data/"
        key = path[len(prefix):] if path.startswith(prefix) else None
        status = owner.status.get(key or "", 200)
        value = owner.values.get(key or "")
        if value is None and status == 200:
            status = 404
        self._reply(status, (value or "not found").encode() if status == 200 else b"error", "text/plain")


class FakeMetadataServer(_ThreadedServer):
    """Tencent's instance metadata for one instance; pass ``base_url`` as ``MetadataURL``.

    ``status[path] = 500`` makes that path fail; ``down = True`` drops every connection.
    """

    def __init__(self, *, region: str, mac: str, vpc_id: str, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(_MetadataHandler, host, port)
        self.values = {
            "placement/region": region,
            "mac": mac,
            f"network/interfaces/macs/{mac}/vpc-id": vpc_id,
        }
        self.status: dict[str, int] = {}
        self.down = False
        self.calls: Counter[str] = Counter()

    @property
    def base_url(self) -> str:
        return self.url + "/latest/meta-data/"


# -- the VPC router's kernel table (for the lab) ------------------------------------------------


class KernelRoutes:
    """An ``on_change`` that mirrors NORMAL_CVM routes into the main table of the namespace ``netns``.

    Enabled routes are ``ip route replace <destination> via <gateway id>``; deleted or disabled
    ones are removed. ``netns`` must be a named namespace other than the root one: the stand-in
    never touches the host's own routes. ``errors`` keeps the ``ip`` failures (a gateway that is not
    on one of the router's segments, for instance); none is raised into the API request.
    """

    def __init__(self, netns: str) -> None:
        path = os.path.join(NETNS_DIR, netns)
        if not netns or "/" in netns or not os.path.exists(path):
            raise ValueError(f"no network namespace named {netns!r}")
        try:
            root = os.stat("/proc/1/ns/net").st_ino
        except PermissionError:  # a container may hide PID 1's namespaces: a named one is then trusted
            root = None
        if os.stat(path).st_ino == root:
            raise ValueError(f"{netns!r} is the root network namespace; refusing to change its routes")
        self.netns = netns
        self.errors: list[str] = []

    def __call__(self, change: RouteChange) -> None:
        route = change.route
        if route.gateway_type != "NORMAL_CVM":
            return
        action = "replace" if change.kind == "create" and route.enabled else "del"
        argv = ["ip", "-n", self.netns, "route", action, route.destination, "via", route.gateway_id]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        if proc.returncode != 0 and not (action == "del" and "No such process" in proc.stderr):
            self.errors.append(f"{' '.join(argv)}: {proc.stderr.strip()}")
            log.warning("%s", self.errors[-1])


# -- as a process (the lab) ---------------------------------------------------------------------


def _listen(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host or "127.0.0.1", int(port)


def main(argv: list[str] | None = None) -> None:
    """``python -m overlay_tencent_vpc.testing``: serve the stand-ins until SIGTERM/SIGINT.

    Prints one JSON line ``{"api_url": …, "metadata_url": …}`` once both listen. The secret key
    comes from ``FAKE_VPC_SECRET_KEY`` (default: FakeCloud's), never from the command line.
    """
    import argparse
    import signal

    cloud = FakeCloud()
    parser = argparse.ArgumentParser(prog="python -m overlay_tencent_vpc.testing", description=main.__doc__)
    parser.add_argument("--api-listen", default="127.0.0.1:0", help="HOST:PORT of the VPC API")
    parser.add_argument("--metadata-listen", default="127.0.0.1:0", help="HOST:PORT of the metadata service")
    parser.add_argument("--route-netns", help="mirror the table's routes into this namespace's kernel table")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every API call")
    parser.add_argument("--secret-id", default=cloud.secret_id)
    for name in ("region", "vpc_id", "table_id", "mac"):
        parser.add_argument("--" + name.replace("_", "-"), default=getattr(cloud, name))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    cloud = FakeCloud(secret_id=args.secret_id, secret_key=os.environ.get("FAKE_VPC_SECRET_KEY", cloud.secret_key),
                      region=args.region, vpc_id=args.vpc_id, table_id=args.table_id, mac=args.mac)
    try:
        on_change = KernelRoutes(args.route_netns) if args.route_netns else None
    except ValueError as e:
        parser.error(str(e))
    vpc = cloud.vpc(on_change=on_change)
    vpc.faults.latency = args.latency
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    with FakeVpcServer(vpc, *_listen(args.api_listen)) as api, \
            cloud.metadata_server(*_listen(args.metadata_listen)) as metadata:
        print(json.dumps({"api_url": api.url, "metadata_url": metadata.base_url}), flush=True)
        while not stop.wait(1.0):
            pass


if __name__ == "__main__":
    main()
