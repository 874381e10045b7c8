"""The own route kept right, through the real SDK against the signature-checking fake VPC API."""

from __future__ import annotations

import socket
from ipaddress import IPv4Address, IPv4Network

import pytest
from overlay_core import ConfigError
from overlay_core.reconcile import converge as core_converge
from overlay_tencent_vpc import (
    VpcApi,
    VpcApiError,
    VpcAuthError,
    VpcRoute,
    VpcRouteTarget,
    VpcUnavailableError,
    parse_options,
)
from overlay_tencent_vpc.testing import FakeCloud

CLOUD = FakeCloud()
NODE = IPv4Address(CLOUD.instance_ip)
SUBNET = IPv4Network("10.5.1.0/24")
OTHER_NODE = "192.0.2.12"


def own(vpc, table=CLOUD.table_id):
    return [(r.destination, r.gateway_type, r.gateway_id, r.enabled) for r in vpc.routes(table)
            if r.gateway_id == str(NODE)]


def like(target, api=None, **changes):
    """A target for the same node and network, through another client or for another VPC or table."""
    args = {"vpc_id": target.vpc_id, "node_address": target.node_address, "network": target.network, **changes}
    return VpcRouteTarget(api or target.api, **args)


async def converge(target, desired) -> int:
    """Core's converge of ``target``; 1 when it left a problem (conflict, full table), else 0."""
    await core_converge(target, desired)
    return 0 if target.problem is None else 1


def writes(api):
    return api.calls["CreateRoutes"] + api.calls["DeleteRoutes"]


async def test_absent_route_is_created(vpc, api, target, changes):
    assert await converge(target, [target.route_for(SUBNET)]) == 0
    assert own(vpc) == [("10.5.1.0/24", "NORMAL_CVM", "192.0.2.11", True)]
    assert target.table_id == CLOUD.table_id  # the VPC's first route table, as Flannel; not the other VPC's
    assert vpc.routes("rtb-other01") == []
    assert dict(api.calls) == {"DescribeRouteTables": 1, "CreateRoutes": 1}
    assert vpc.calls["CreateRoutes"] == 1
    assert [(c.kind, c.table_id, c.route.destination) for c in changes] == [("create", CLOUD.table_id, "10.5.1.0/24")]
    assert target.problem is None


async def test_present_route_needs_one_describe_and_no_write(vpc, api, target):
    vpc.console_add(CLOUD.table_id, "10.5.1.0/24", str(NODE))  # made by an earlier agent, or by Flannel
    for _ in range(3):
        assert await converge(target, [target.route_for(SUBNET)]) == 0
    assert dict(api.calls) == {"DescribeRouteTables": 3}
    assert len(own(vpc)) == 1


async def test_disabled_route_is_replaced(vpc, api, target, changes):
    await converge(target, [target.route_for(SUBNET)])
    first_id = vpc.routes(CLOUD.table_id)[0].route_id
    vpc.console_disable(CLOUD.table_id, "10.5.1.0/24")
    assert await converge(target, [target.route_for(SUBNET)]) == 0
    assert own(vpc) == [("10.5.1.0/24", "NORMAL_CVM", "192.0.2.11", True)]
    assert vpc.routes(CLOUD.table_id)[0].route_id != first_id
    assert [c.kind for c in changes] == ["create", "disable", "delete", "create"]
    assert api.calls["DeleteRoutes"] == 1 and api.calls["CreateRoutes"] == 2


async def test_route_deleted_by_hand_is_restored(vpc, api, target):
    await converge(target, [target.route_for(SUBNET)])
    vpc.console_delete(CLOUD.table_id, "10.5.1.0/24")
    assert own(vpc) == []
    await converge(target, [target.route_for(SUBNET)])
    assert own(vpc) == [("10.5.1.0/24", "NORMAL_CVM", "192.0.2.11", True)]


async def test_lease_change_deletes_old_and_creates_new(vpc, api, target, changes):
    vpc.console_add(CLOUD.table_id, "10.5.7.0/24", OTHER_NODE)
    vpc.console_add(CLOUD.table_id, "172.31.0.0/24", str(NODE))  # through this node but outside the network: not ours
    await converge(target, [target.route_for(SUBNET)])
    changes.clear()
    new = IPv4Network("10.5.9.0/24")
    assert await converge(target, [target.route_for(new)]) == 0
    assert sorted(own(vpc)) == [("10.5.9.0/24", "NORMAL_CVM", "192.0.2.11", True),
                                ("172.31.0.0/24", "NORMAL_CVM", "192.0.2.11", True)]
    assert [(c.kind, c.route.destination) for c in changes] == [("delete", "10.5.1.0/24"), ("create", "10.5.9.0/24")]
    assert any(r.destination == "10.5.7.0/24" and r.gateway_id == OTHER_NODE for r in vpc.routes(CLOUD.table_id))


async def test_incremental_apply_without_dump(vpc, api, target):
    """Core applies per-event deltas with desired-state objects (no RouteId) between full converges."""
    await converge(target, [target.route_for(SUBNET)])
    new = IPv4Network("10.5.9.0/24")
    assert await target.apply([target.route_for(new)], [target.route_for(SUBNET)]) == 0
    assert own(vpc) == [("10.5.9.0/24", "NORMAL_CVM", "192.0.2.11", True)]
    assert api.calls["DescribeRouteTables"] == 2  # the table changed since the last dump: described again
    assert await target.apply([], [target.route_for(new)]) == 0
    assert own(vpc) == []


async def test_full_table_is_refused_before_any_call(vpc, api, target):
    target.limit = 5
    for i in range(5):
        vpc.console_add(CLOUD.table_id, f"10.5.{100 + i}.0/24", f"192.0.2.{100 + i}")
    assert await converge(target, [target.route_for(SUBNET)]) == 1
    assert writes(api) == 0 and own(vpc) == []
    assert target.table_usage == (5, 5)
    problem = target.problem
    assert problem is not None and "\n" not in problem
    assert CLOUD.table_id in problem and "RouteTableLimit 5" in problem and "full" in problem
    vpc.console_delete(CLOUD.table_id, "10.5.100.0/24")  # room again: the next converge creates it
    assert await converge(target, [target.route_for(SUBNET)]) == 0
    assert len(own(vpc)) == 1 and target.problem is None


async def test_replacing_a_disabled_route_fits_a_full_table(vpc, api, target):
    target.limit = 3
    vpc.console_add(CLOUD.table_id, "10.5.100.0/24", "192.0.2.100")
    vpc.console_add(CLOUD.table_id, "10.5.101.0/24", "192.0.2.101")
    vpc.console_add(CLOUD.table_id, "10.5.1.0/24", str(NODE), enabled=False)
    assert await converge(target, [target.route_for(SUBNET)]) == 0
    assert own(vpc) == [("10.5.1.0/24", "NORMAL_CVM", "192.0.2.11", True)]


async def test_conflicting_route_is_reported_never_overwritten(vpc, api, target):
    vpc.console_add(CLOUD.table_id, "10.5.1.0/24", OTHER_NODE)
    assert await converge(target, [target.route_for(SUBNET)]) == 1
    assert writes(api) == 0
    assert [(r.destination, r.gateway_id) for r in vpc.routes(CLOUD.table_id)] == [("10.5.1.0/24", OTHER_NODE)]
    problem = target.problem
    assert problem is not None and OTHER_NODE in problem and "10.5.1.0/24" in problem and CLOUD.table_id in problem
    vpc.console_delete(CLOUD.table_id, "10.5.1.0/24")
    assert await converge(target, [target.route_for(SUBNET)]) == 0
    assert len(own(vpc)) == 1 and target.problem is None


async def test_cleanup_removes_exactly_our_route(vpc, api, target):
    """``overlay-core cleanup`` converges the target to nothing."""
    vpc.console_add(CLOUD.table_id, "10.5.7.0/24", OTHER_NODE)
    vpc.console_add(CLOUD.table_id, "172.31.0.0/24", str(NODE))
    await converge(target, [target.route_for(SUBNET)])
    assert await core_converge(target, []) == (0, 1)
    assert sorted((r.destination, r.gateway_id) for r in vpc.routes(CLOUD.table_id)) == [
        ("10.5.7.0/24", OTHER_NODE), ("172.31.0.0/24", str(NODE))]
    assert await core_converge(target, []) == (0, 0)  # nothing left: one describe, no write
    assert api.calls["DeleteRoutes"] == 1


async def test_configured_route_table_is_used(vpc, api, target):
    vpc.add_table("rtb-fake0002", CLOUD.vpc_id)
    target = like(target, table_id="rtb-fake0002")
    await converge(target, [target.route_for(SUBNET)])
    assert own(vpc) == [] and len(own(vpc, "rtb-fake0002")) == 1


@pytest.mark.parametrize("table_id,words", [("rtb-nothere", ["not found"]), ("rtb-other01", ["vpc-other"])])
async def test_wrong_route_table_is_a_config_error(api, table_id, words, target):
    target = like(target, table_id=table_id)
    with pytest.raises(ConfigError) as e:
        await target.dump()
    assert "RouteTableId" in str(e.value) and all(w in str(e.value) for w in words)


async def test_vpc_without_route_table(api, target):
    target = like(target, vpc_id="vpc-empty")
    with pytest.raises(ConfigError, match="vpc-empty has no route table"):
        await target.dump()


async def test_bad_secret_is_auth_failure_in_one_line(vpc_server, vpc, target, fast_retry):
    config = {"AccessKeyID": CLOUD.secret_id, "AccessKeySecret": "wrong-key", "ApiEndpoint": vpc_server.url}
    opts = parse_options(config, {})
    async with VpcApi(opts, CLOUD.region, retry=fast_retry) as api:
        target = like(target, api)
        with pytest.raises(VpcAuthError) as e:
            await converge(target, [target.route_for(SUBNET)])
    msg = str(e.value)
    assert "\n" not in msg and "AuthFailure.SignatureFailure" in msg and "AccessKeySecret" in msg
    assert "wrong-key" not in msg and CLOUD.secret_id not in msg
    assert isinstance(e.value, ConfigError)
    assert api.calls["DescribeRouteTables"] == 1  # not retried
    assert vpc.routes(CLOUD.table_id) == []


async def test_missing_permission_is_one_line_naming_the_actions(vpc, api, target):
    vpc.denied.add("CreateRoutes")
    with pytest.raises(VpcAuthError) as e:
        await converge(target, [target.route_for(SUBNET)])
    msg = str(e.value)
    assert "\n" not in msg and "UnauthorizedOperation" in msg and "vpc:CreateRoutes" in msg
    assert target.problem == msg and api.calls["CreateRoutes"] == 1


async def test_unknown_key_id_is_auth_failure(vpc_server, fast_retry):
    config = {"AccessKeyID": "AKIDnobody", "AccessKeySecret": CLOUD.secret_key, "ApiEndpoint": vpc_server.url}
    opts = parse_options(config, {})
    async with VpcApi(opts, CLOUD.region, retry=fast_retry) as api:
        with pytest.raises(VpcAuthError, match="AuthFailure.SecretIdNotFound"):
            await api.describe_route_tables(vpc_id=CLOUD.vpc_id)


async def test_wrong_region_is_an_api_error(options, fast_retry):
    async with VpcApi(options, "ap-elsewhere", retry=fast_retry) as api:
        with pytest.raises(VpcApiError, match="UnsupportedRegion") as e:
            await api.describe_route_tables(vpc_id=CLOUD.vpc_id)
    assert not isinstance(e.value, VpcUnavailableError)


@pytest.mark.parametrize("fault", ["throttle", "server_error"])
async def test_throttling_and_5xx_are_retried(vpc, api, target, fault):
    setattr(vpc.faults, fault, 2)
    assert await converge(target, [target.route_for(SUBNET)]) == 0
    assert len(own(vpc)) == 1
    assert api.calls["DescribeRouteTables"] == 3 and api.retries["DescribeRouteTables"] == 2


async def test_throttled_on_every_attempt_fails_the_converge_and_the_next_one_recovers(vpc, api, target, fast_retry):
    vpc.faults.throttle = fast_retry.attempts
    with pytest.raises(VpcUnavailableError) as e:
        await converge(target, [target.route_for(SUBNET)])
    assert "RequestLimitExceeded" in str(e.value) and "\n" not in str(e.value)
    assert target.problem == str(e.value)
    assert await converge(target, [target.route_for(SUBNET)]) == 0
    assert len(own(vpc)) == 1 and target.problem is None


async def test_throttled_write_is_counted_as_failed(vpc, api, target, fast_retry):
    await target.dump()
    vpc.faults.throttle = fast_retry.attempts
    assert await target.apply([target.route_for(SUBNET)], []) == 1
    assert "CreateRoutes" in (target.problem or "")
    assert await converge(target, [target.route_for(SUBNET)]) == 0 and len(own(vpc)) == 1


async def test_api_down_at_start_then_back(vpc, api, target):
    vpc.faults.down = True
    with pytest.raises(VpcUnavailableError) as e:
        await converge(target, [target.route_for(SUBNET)])
    msg = str(e.value)
    assert "\n" not in msg and "DescribeRouteTables" in msg and "failed 4 times" in msg
    assert target.problem == msg
    vpc.faults.down = False
    assert await converge(target, [target.route_for(SUBNET)]) == 0
    assert len(own(vpc)) == 1 and target.problem is None


async def test_nothing_listening_is_unavailable(options, fast_retry):
    opts = parse_options({"AccessKeyID": CLOUD.secret_id, "AccessKeySecret": CLOUD.secret_key,
                          "ApiEndpoint": f"http://127.0.0.1:{closed_port()}"}, {})
    async with VpcApi(opts, CLOUD.region, retry=fast_retry) as api:
        with pytest.raises(VpcUnavailableError, match="ConnectError"):
            await api.describe_route_tables(vpc_id=CLOUD.vpc_id)


def closed_port() -> int:
    with socket.socket() as s:  # a port with nothing listening
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_proxy_environment_is_ignored_for_an_overridden_endpoint(monkeypatch, options, vpc, fast_retry):
    proxy = f"http://127.0.0.1:{closed_port()}"  # were it used, every call would fail to connect
    monkeypatch.setenv("HTTP_PROXY", proxy)
    monkeypatch.setenv("ALL_PROXY", proxy)
    async with VpcApi(options, CLOUD.region, retry=fast_retry) as api:
        assert [t.table_id for t in await api.describe_route_tables(vpc_id=CLOUD.vpc_id)] == [CLOUD.table_id]


async def test_api_calls_per_converge(vpc, api, target):
    await converge(target, [target.route_for(SUBNET)])
    start = dict(api.calls)
    for _ in range(5):
        await converge(target, [target.route_for(SUBNET)])
    assert start == {"DescribeRouteTables": 1, "CreateRoutes": 1}
    assert api.calls["DescribeRouteTables"] - start["DescribeRouteTables"] == 5
    assert writes(api) == 1
    assert vpc.calls["DescribeRouteTables"] == 6


def test_route_value_ignores_route_id():
    a = VpcRoute(SUBNET, "192.0.2.11", route_id=1)
    b = VpcRoute(SUBNET, "192.0.2.11")
    assert a == b and hash(a) == hash(b) and a.key == b.key
    assert VpcRoute(SUBNET, "192.0.2.11", enabled=False) != b
    assert VpcRoute(SUBNET, "192.0.2.11").key != VpcRoute(IPv4Network("10.5.2.0/24"), "192.0.2.11").key
    assert IPv4Address("192.0.2.11") != a.gateway_id  # gateway ids are the API's strings


async def test_default_endpoint_profile():
    """Pins what the SDK does with our profile: Tencent's public endpoint over https, no region breaker."""
    opts = parse_options({"AccessKeyID": CLOUD.secret_id, "AccessKeySecret": CLOUD.secret_key}, {})
    async with VpcApi(opts, "ap-guangzhou") as api:
        client = api._client
        assert client.profile.httpProfile.scheme == "https"
        assert client._get_endpoint() == "vpc.tencentcloudapi.com"
        assert client.circuit_breaker is None  # no fallback to ap-guangzhou's endpoint
        assert client.profile.language == "en-US"
        assert client.http_client._trust_env  # the public endpoint honours HTTPS_PROXY
