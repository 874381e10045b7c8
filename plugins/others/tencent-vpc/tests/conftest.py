"""Fixtures: the fake VPC API and metadata servers on 127.0.0.1, options pointing at them, the real SDK client."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from ipaddress import IPv4Address, IPv4Network

import pytest
from overlay_tencent_vpc import RetryPolicy, TencentOptions, VpcApi, VpcRouteTarget, parse_options
from overlay_tencent_vpc.testing import FakeMetadataServer, FakeVpc, FakeVpcServer, RouteChange

SECRET_ID = "AKIDtctTestKeyId0001"
SECRET_KEY = "tct-secret-key-Zq8vX2"
REGION = "ap-testland"
VPC_ID = "vpc-tct0001"
TABLE = "rtb-tct0001"
MAC = "52:54:00:12:34:56"
NODE = IPv4Address("192.0.2.11")
NETWORK = IPv4Network("10.5.0.0/16")
FAST_RETRY = RetryPolicy(attempts=4, first_delay=0.01, max_delay=0.05)


@pytest.fixture
def changes() -> list[RouteChange]:
    return []


@pytest.fixture
def vpc(changes) -> FakeVpc:
    fake = FakeVpc({SECRET_ID: SECRET_KEY}, region=REGION, on_change=changes.append)
    fake.add_table(TABLE, VPC_ID, main=True)
    fake.add_table("rtb-other01", "vpc-other", main=True)
    return fake


@pytest.fixture
def vpc_server(vpc) -> Iterator[FakeVpcServer]:
    with FakeVpcServer(vpc) as server:
        yield server


@pytest.fixture
def metadata_server() -> Iterator[FakeMetadataServer]:
    with FakeMetadataServer(region=REGION, mac=MAC, vpc_id=VPC_ID) as server:
        yield server


@pytest.fixture
def options(vpc_server, metadata_server) -> TencentOptions:
    config = {
        "Type": "tencent-vpc",
        "AccessKeyID": SECRET_ID,
        "AccessKeySecret": SECRET_KEY,
        "ApiEndpoint": vpc_server.url,
        "MetadataURL": metadata_server.base_url,
    }
    return parse_options(config, {})


@pytest.fixture
async def api(options) -> AsyncIterator[VpcApi]:
    async with VpcApi(options, REGION, retry=FAST_RETRY) as client:
        yield client


@pytest.fixture
def target(api) -> VpcRouteTarget:
    return VpcRouteTarget(api, vpc_id=VPC_ID, node_address=NODE, network=NETWORK)
