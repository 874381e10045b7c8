"""The fake VPC API itself: signature checks on requests the real SDK signed, and the API semantics."""

from __future__ import annotations

import time

import pytest
from overlay_tencent_vpc import VpcApi, parse_options
from overlay_tencent_vpc.testing import ApiFault, FakeCloud, FakeVpc, FakeVpcServer, verify_tc3

CLOUD = FakeCloud()


class RecordingVpc(FakeVpc):
    """Keeps the last request as received, to replay it altered."""

    def serve_request(self, method, target, headers, body):
        self.last = (method, target, dict(headers), body)
        return super().serve_request(method, target, headers, body)


@pytest.fixture
async def signed_request(vpc):
    """A DescribeRouteTables request exactly as the SDK signed and sent it."""
    recording = RecordingVpc({CLOUD.secret_id: CLOUD.secret_key}, region=CLOUD.region)
    recording.tables = vpc.tables
    with FakeVpcServer(recording) as server:
        opts = parse_options(CLOUD.backend_config(server.url, "http://127.0.0.1:9/"), {})
        async with VpcApi(opts, CLOUD.region) as client:
            await client.describe_route_tables(vpc_id=CLOUD.vpc_id)
    method, target, headers, body = recording.last
    return method, target.partition("?")[2], headers, body


def check(request, secrets=None, now=None, **changes):
    method, query, headers, body = request
    headers = {**headers, **changes.pop("headers", {})}
    body = changes.pop("body", body)
    verify_tc3(method, "/", query, headers, body, secrets or {CLOUD.secret_id: CLOUD.secret_key},
               now if now is not None else time.time())


async def test_sdk_request_is_accepted(signed_request):
    method, query, headers, body = signed_request
    assert headers["x-tc-action"] == "DescribeRouteTables" and headers["x-tc-version"] == "2017-03-12"
    assert headers["x-tc-region"] == CLOUD.region and headers["authorization"].startswith("TC3-HMAC-SHA256 ")
    check(signed_request)


@pytest.mark.parametrize(
    "change,code",
    [
        ({"body": b'{"Filters": [{"Name": "vpc-id", "Values": ["vpc-evil"]}]}'}, "AuthFailure.SignatureFailure"),
        ({"headers": {"host": "vpc.example:1"}}, "AuthFailure.SignatureFailure"),
        ({"headers": {"content-type": "text/plain"}}, "AuthFailure.SignatureFailure"),
        ({"secrets": {CLOUD.secret_id: "another-key"}}, "AuthFailure.SignatureFailure"),
        ({"secrets": {"AKIDsomeoneelse": CLOUD.secret_key}}, "AuthFailure.SecretIdNotFound"),
        ({"now": time.time() + 3600}, "AuthFailure.SignatureExpire"),
        ({"headers": {"authorization": "Basic Zm9vOmJhcg=="}}, "AuthFailure.InvalidAuthorization"),
    ],
)
async def test_altered_requests_are_refused(signed_request, change, code):
    with pytest.raises(ApiFault) as e:
        check(signed_request, **change)
    assert e.value.code == code


async def test_timestamp_change_breaks_the_signature(signed_request):
    ts = int(signed_request[2]["x-tc-timestamp"]) + 1
    with pytest.raises(ApiFault, match="could not be validated"):
        check(signed_request, headers={"x-tc-timestamp": str(ts)})


def test_describe_filters_and_pages(vpc):
    for i in range(3):
        vpc.add_table(f"rtb-page{i}", "vpc-paged")
    page = vpc.handle("DescribeRouteTables", {"Filters": [{"Name": "vpc-id", "Values": ["vpc-paged"]}],
                                              "Offset": "1", "Limit": "1"})
    assert page["TotalCount"] == 3 and [t["RouteTableId"] for t in page["RouteTableSet"]] == ["rtb-page1"]
    by_id = vpc.handle("DescribeRouteTables", {"Filters": [{"Name": "route-table-id", "Values": [CLOUD.table_id]}]})
    assert [t["RouteTableId"] for t in by_id["RouteTableSet"]] == [CLOUD.table_id]
    with pytest.raises(ApiFault) as e:
        vpc.handle("DescribeRouteTables", {"RouteTableIds": ["rtb-nothere"]})
    assert e.value.code == "ResourceNotFound"


def test_create_delete_and_api_limits(vpc, changes):
    vpc.table_limit = 2
    made = vpc.handle("CreateRoutes", {"RouteTableId": CLOUD.table_id, "Routes": [
        {"DestinationCidrBlock": "10.5.1.0/24", "GatewayType": "NORMAL_CVM", "GatewayId": "192.0.2.11"}]})
    assert made["TotalCount"] == 1
    route = made["RouteTableSet"][0]["RouteSet"][0]
    assert route["Enabled"] is True and route["RouteType"] == "USER" and route["RouteItemId"].startswith("rti-")
    with pytest.raises(ApiFault) as e:
        vpc.handle("CreateRoutes", {"RouteTableId": CLOUD.table_id, "Routes": [
            {"DestinationCidrBlock": "10.5.1.0/24", "GatewayType": "NORMAL_CVM", "GatewayId": "192.0.2.12"}]})
    assert e.value.code == "InvalidParameterValue.Duplicate"
    with pytest.raises(ApiFault) as e:
        vpc.handle("CreateRoutes", {"RouteTableId": CLOUD.table_id, "Routes": [
            {"DestinationCidrBlock": f"10.5.{i}.0/24", "GatewayType": "NORMAL_CVM", "GatewayId": "192.0.2.12"}
            for i in (2, 3)]})
    assert e.value.code == "LimitExceeded"
    vpc.handle("DeleteRoutes", {"RouteTableId": CLOUD.table_id, "Routes": [{"RouteItemId": route["RouteItemId"]}]})
    assert vpc.routes(CLOUD.table_id) == []
    assert [c.kind for c in changes] == ["create", "delete"]
    with pytest.raises(ApiFault) as e:
        vpc.handle("DeleteRoutes", {"RouteTableId": CLOUD.table_id, "Routes": [{"RouteId": route["RouteId"]}]})
    assert e.value.code == "ResourceNotFound"


def test_unknown_action(vpc):
    with pytest.raises(ApiFault) as e:
        vpc.handle("ResetRoutes", {})
    assert e.value.code == "InvalidAction"


async def test_latency_is_added_per_call(vpc, api):
    vpc.faults.latency = 0.05
    start = time.monotonic()
    await api.describe_route_tables(vpc_id=CLOUD.vpc_id)
    await api.describe_route_tables(vpc_id=CLOUD.vpc_id)
    assert time.monotonic() - start >= 0.1
    assert vpc.calls["DescribeRouteTables"] == 2
