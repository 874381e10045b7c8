"""The Backend class against the fake VPC API and metadata service (real SDK, signatures checked):
the start, a failing API, a refused key, a lease change, the report and the metrics."""

from __future__ import annotations

import json
from ipaddress import IPv4Address, IPv4Network
from types import SimpleNamespace

import pytest
from overlay_core import ConfigError, ExternalInterface, LeaseRequest, Node, parse_config
from overlay_core.lease import Lease, LeaseAttrs
from overlay_tencent_vpc import RetryPolicy
from overlay_tencent_vpc.backend import PEER_MODE, TencentVpcBackend
from overlay_tencent_vpc.testing import FakeCloud
from prometheus_client import CollectorRegistry

CLOUD = FakeCloud()
NODE_IP = IPv4Address(CLOUD.instance_ip)
SUBNET = IPv4Network("10.5.1.0/24")


class Backend(TencentVpcBackend):
    retry = RetryPolicy(attempts=2, first_delay=0.01, max_delay=0.01)


def lease(subnet: IPv4Network, ip: IPv4Address = NODE_IP) -> Lease:
    return Lease(subnet, None, LeaseAttrs(ip, None, ""))


def make(vpc_server, metadata_server, registry=None, **config) -> Backend:
    backend = {**CLOUD.backend_config(vpc_server.url, metadata_server.base_url), **config}
    cfg = parse_config(json.dumps({"Network": "10.5.0.0/16", "Backend": backend}))
    iface = ExternalInterface("eth0", 2, 1500, address=NODE_IP, public_ip=NODE_IP)
    node = Node(cfg, iface, netlink=None)
    asked: list[int] = []
    services = SimpleNamespace(registry=registry or CollectorRegistry(), reconcile_soon=lambda: asked.append(1),
                               asked=asked)
    b = Backend(node, services)
    b.overlay_network_config(cfg, node)
    return b


async def start(b: Backend, subnet: IPv4Network = SUBNET) -> None:
    b.node.lease = lease(subnet)
    await b.overlay_lease_acquired(b.node.lease)
    await b.overlay_store_in_sync([])


def own(vpc):
    return [(r.destination, r.gateway_id, r.enabled) for r in vpc.routes(CLOUD.table_id)
            if r.gateway_id == str(NODE_IP)]


async def test_start_creates_the_own_route_with_the_external_mtu_and_no_backend_type(vpc, vpc_server, metadata_server):
    registry = CollectorRegistry()
    b = make(vpc_server, metadata_server, registry)
    assert b.overlay_lease_request(b.node) == LeaseRequest("", 1500)
    b.node.lease = lease(SUBNET)
    await b.overlay_lease_acquired(b.node.lease)  # the route right away, before the peers are read
    assert own(vpc) == [("10.5.1.0/24", str(NODE_IP), True)]
    await b.overlay_store_in_sync([])
    assert dict(vpc.calls) == {"DescribeRouteTables": 2, "CreateRoutes": 1}
    peer = lease(IPv4Network("10.5.2.0/24"), IPv4Address("192.0.2.12"))
    assert b.accepts(peer) and b.plan(peer).mode == PEER_MODE and b.plan(peer).objects == ()
    await b.overlay_reconcile([peer])  # nothing changed: one describe, no write
    assert vpc.calls["CreateRoutes"] == 1 and vpc.calls["DeleteRoutes"] == 0
    report = b.overlay_report()
    assert "not_ready" not in report
    assert report["vpc"] == {"vpc_id": CLOUD.vpc_id, "route_table": CLOUD.table_id, "routes_used": 1,
                             "route_table_limit": 50}
    sample = registry.get_sample_value
    assert sample("overlay_tencent_vpc_api_calls_total", {"action": "CreateRoutes"}) == 1
    assert sample("overlay_tencent_vpc_api_calls_total", {"action": "DescribeRouteTables"}) == vpc.calls[
        "DescribeRouteTables"]
    assert sample("overlay_tencent_vpc_route_table_routes") == 1
    assert sample("overlay_tencent_vpc_route_table_limit") == 50
    await b.overlay_shutdown()
    assert b.api._client.http_client.is_closed


async def test_api_down_at_start_is_not_ready_with_the_reason_then_recovers(vpc, vpc_server, metadata_server):
    registry = CollectorRegistry()
    b = make(vpc_server, metadata_server, registry)
    vpc.faults.down = True
    await start(b)  # no exception: the agent runs, not ready
    reason = b.overlay_report()["not_ready"]
    assert "DescribeRouteTables" in reason and "\n" not in reason
    assert registry.get_sample_value("overlay_tencent_vpc_api_retries_total", {"action": "DescribeRouteTables"}) >= 1
    vpc.faults.down = False
    await b.overlay_reconcile([])
    assert "not_ready" not in b.overlay_report() and len(own(vpc)) == 1


async def test_metadata_unreachable_at_start_is_not_ready_then_recovers(vpc, vpc_server, metadata_server):
    b = make(vpc_server, metadata_server)
    metadata_server.down = True
    await start(b)
    assert "metadata" in b.overlay_report()["not_ready"] and b.target is None
    metadata_server.down = False
    await b.overlay_reconcile([])
    assert "not_ready" not in b.overlay_report() and len(own(vpc)) == 1


async def test_refused_key_at_start_is_a_fatal_one_liner_without_the_key(vpc, vpc_server, metadata_server):
    b = make(vpc_server, metadata_server, AccessKeySecret="wrong-secret-77")
    b.node.lease = lease(SUBNET)
    with pytest.raises(ConfigError) as info:
        await b.overlay_lease_acquired(b.node.lease)
    text = str(info.value)
    assert "AuthFailure" in text and "\n" not in text and "wrong-secret-77" not in text
    assert CLOUD.secret_id not in text


async def test_unknown_route_table_at_start_is_fatal(vpc, vpc_server, metadata_server):
    b = make(vpc_server, metadata_server, RouteTableId="rtb-nothere1")
    b.node.lease = lease(SUBNET)
    with pytest.raises(ConfigError, match="rtb-nothere1 not found"):
        await b.overlay_lease_acquired(b.node.lease)


async def test_refused_key_later_is_not_ready_and_retried(vpc, vpc_server, metadata_server):
    b = make(vpc_server, metadata_server)
    await start(b)
    vpc.denied.add("DescribeRouteTables")
    await b.overlay_reconcile([])
    assert "UnauthorizedOperation" in b.overlay_report()["not_ready"]
    vpc.denied.clear()
    await b.overlay_reconcile([])
    assert "not_ready" not in b.overlay_report()


async def test_lease_change_deletes_the_old_route_and_creates_the_new_one(vpc, vpc_server, metadata_server):
    b = make(vpc_server, metadata_server)
    await start(b)
    new = IPv4Network("10.5.7.0/24")
    b.node.lease = lease(new)
    await b.overlay_lease_acquired(b.node.lease)
    assert b.services.asked == [1]  # a reconcile is asked for at once
    await b.overlay_reconcile([])
    assert own(vpc) == [("10.5.7.0/24", str(NODE_IP), True)]


async def test_full_table_is_reported_as_not_ready(vpc, vpc_server, metadata_server):
    b = make(vpc_server, metadata_server, RouteTableLimit=1)
    vpc.console_add(CLOUD.table_id, "10.5.100.0/24", "192.0.2.100")
    await start(b)
    reason = b.overlay_report()["not_ready"]
    assert "full" in reason and "RouteTableLimit 1" in reason and own(vpc) == []


@pytest.mark.parametrize("config", [{"EnableIPv6": True, "IPv6Network": "2001:db8:10::/48"},
                                    {"EnableIPv4": False, "EnableIPv6": True, "IPv6Network": "2001:db8:10::/48"}])
def test_ipv6_is_refused_clearly(vpc_server, metadata_server, config):
    b = make(vpc_server, metadata_server)
    raw = {"Network": "10.5.0.0/16", "Backend": CLOUD.backend_config(vpc_server.url, metadata_server.base_url),
           **config}
    if config.get("EnableIPv4") is False:
        del raw["Network"]
    cfg = parse_config(json.dumps(raw))
    with pytest.raises(ConfigError, match="IPv6 is not supported"):
        b.overlay_network_config(cfg, b.node)
