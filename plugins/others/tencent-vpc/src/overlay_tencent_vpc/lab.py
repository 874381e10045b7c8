"""Lab extras for ``overlay-core lab up --backend tencent-vpc`` (entry point group ``overlay.lab``).

The lab stands in for the VPC: a router namespace ``<lab prefix>vpc`` on the underlay switch at
192.0.2.254 runs the fake VPC API (:8080, signatures checked) and the fake metadata service
(:8081) as one process, and applies every CreateRoutes/DeleteRoutes to its own kernel table
(``KernelRoutes``). Each node routes the cluster network through it, as a CVM's default route
goes through the VPC router. So pods on different nodes reach each other only through routes
that the backend's API calls created. The process lives in the router namespace: ``lab down``
ends it with the namespace.

Credentials reach the agents through ``ACCESS_KEY_ID``/``ACCESS_KEY_SECRET`` (Flannel's
fallback), not the network config, so they are not in etcd or ``lab status``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from ipaddress import IPv4Address

from overlay_core.errors import OverlayError
from overlay_core.testing.netns import ip, nsexec
from overlay_lab.lab import ROUTER_HOST, UNDERLAY

from .testing import FakeCloud

CLOUD = FakeCloud()
API_PORT = 8080
METADATA_PORT = 8081
READY_TIMEOUT = 20.0


def router_ns(lab) -> str:
    return f"{lab.prefix}vpc"


def router_ip() -> IPv4Address:
    return UNDERLAY.network_address + ROUTER_HOST


def api_url() -> str:
    return f"http://{router_ip()}:{API_PORT}"


def metadata_url() -> str:
    return f"http://{router_ip()}:{METADATA_PORT}/latest/meta-data/"


def check(lab, nodes: int, remote_nodes: int, ipv6: str) -> str | None:
    if ipv6:
        return "IPv6 is not supported (the VPC routes IPv4 pod subnets only)"
    if remote_nodes:
        return "--remote-nodes is not supported: the VPC router is the lab's one router"
    return None


def prepare(lab) -> None:
    """The VPC router namespace and, inside it, the fake API and metadata service."""
    ns = router_ns(lab)
    lab._host(ns, "vpc", ROUTER_HOST)
    # The router forwards between hosts of one segment: without this it would tell them (ICMP
    # redirect) to go direct, and traffic would bypass the routes the API created.
    for knob in ("net.ipv4.conf.all.send_redirects=0", "net.ipv4.conf.default.send_redirects=0",
                 "net.ipv4.conf.eth0.send_redirects=0"):
        nsexec(ns, "sysctl", "-qw", knob)
    log = os.path.join(lab.dir, "vpc.log")
    cmd = ["ip", "netns", "exec", ns, sys.executable, "-m", "overlay_tencent_vpc.testing",
           f"--api-listen={router_ip()}:{API_PORT}", f"--metadata-listen={router_ip()}:{METADATA_PORT}",
           f"--route-netns={ns}"]
    with open(log, "ab") as out:
        subprocess.Popen(cmd, stdout=out, stderr=out, stdin=subprocess.DEVNULL, start_new_session=True,
                         env={**os.environ, "FAKE_VPC_SECRET_KEY": CLOUD.secret_key})
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if _listening(log):
            return
        time.sleep(0.05)
    raise OverlayError(f"the fake VPC API in {ns} did not start within {READY_TIMEOUT:.0f} s; see {log}")


def _listening(log: str) -> bool:
    try:
        with open(log) as fh:
            return any(line.startswith("{") and "api_url" in json.loads(line) for line in fh)
    except (OSError, ValueError):
        return False


def backend_options(lab) -> dict:
    return {"ApiEndpoint": api_url(), "MetadataURL": metadata_url()}


def node_env(lab, node) -> dict:
    return {"ACCESS_KEY_ID": CLOUD.secret_id, "ACCESS_KEY_SECRET": CLOUD.secret_key}


def node_added(lab, node) -> None:
    """The node reaches the cluster network through the VPC router, as a CVM does."""
    network = lab.state.config.get("Network", "10.5.0.0/16")
    ip("route", "replace", network, "via", str(router_ip()), ns=node.ns)


def router_routes(lab) -> str:
    """The VPC router's kernel routes to pod subnets (what the API calls created)."""
    return ip("route", "show", ns=router_ns(lab))


# -- the console, for tests: a person deleting or disabling a route --------------------------------


def console(lab, action: str, destination: str) -> None:
    """``action`` ('delete' or 'disable') the route to ``destination`` through the lab's VPC API,
    signed with the lab's key, as someone in Tencent's console would (run in the router namespace)."""
    nsexec(router_ns(lab), sys.executable, "-m", "overlay_tencent_vpc.lab", action, destination,
           timeout=30)


def _console_main(argv: list[str]) -> int:
    from tencentcloud.common import credential
    from tencentcloud.common.profile.client_profile import ClientProfile
    from tencentcloud.common.profile.http_profile import HttpProfile
    from tencentcloud.vpc.v20170312 import models, vpc_client

    action, destination = argv
    profile = ClientProfile(httpProfile=HttpProfile(protocol="http", endpoint=f"{router_ip()}:{API_PORT}"))
    profile.disable_region_breaker = True
    client = vpc_client.VpcClient(credential.Credential(CLOUD.secret_id, CLOUD.secret_key), CLOUD.region, profile)
    describe = models.DescribeRouteTablesRequest()
    describe.RouteTableIds = [CLOUD.table_id]
    routes = client.DescribeRouteTables(describe).RouteTableSet[0].RouteSet
    ids = [r.RouteId for r in routes if r.DestinationCidrBlock == destination]
    if not ids:
        print(f"no route to {destination} in {CLOUD.table_id}", file=sys.stderr)
        return 1
    request = models.DeleteRoutesRequest() if action == "delete" else models.DisableRoutesRequest()
    request.RouteTableId = CLOUD.table_id
    if action == "delete":
        request.Routes = []
        for route_id in ids:
            route = models.Route()
            route.RouteId = route_id
            request.Routes.append(route)
        client.DeleteRoutes(request)
    else:
        request.RouteIds = ids
        client.DisableRoutes(request)
    return 0


if __name__ == "__main__":
    sys.exit(_console_main(sys.argv[1:]))
