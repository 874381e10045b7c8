"""Fixtures: the fake VPC API and metadata servers on 127.0.0.1, options pointing at them, the real SDK client."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from ipaddress import IPv4Address, IPv4Network

import pytest
from overlay_tencent_vpc import RetryPolicy, TencentOptions, VpcApi, VpcRouteTarget, parse_options
from overlay_tencent_vpc.testing import FakeCloud, FakeMetadataServer, FakeVpc, FakeVpcServer, RouteChange

CLOUD = FakeCloud()


@pytest.fixture
def changes() -> list[RouteChange]:
    return []


@pytest.fixture
def vpc(changes) -> FakeVpc:
    fake = CLOUD.vpc(on_change=changes.append)
    fake.add_table("rtb-other01", "vpc-other", main=True)
    return fake


@pytest.fixture
def vpc_server(vpc) -> Iterator[FakeVpcServer]:
    with FakeVpcServer(vpc) as server:
        yield server


@pytest.fixture
def metadata_server() -> Iterator[FakeMetadataServer]:
    with CLOUD.metadata_server() as server:
        yield server


@pytest.fixture
def options(vpc_server, metadata_server) -> TencentOptions:
    return parse_options(CLOUD.backend_config(vpc_server.url, metadata_server.base_url), {})


@pytest.fixture
def fast_retry() -> RetryPolicy:
    return RetryPolicy(attempts=4, first_delay=0.01, max_delay=0.05)


@pytest.fixture
async def api(options, fast_retry) -> AsyncIterator[VpcApi]:
    async with VpcApi(options, CLOUD.region, retry=fast_retry) as client:
        yield client


@pytest.fixture
def target(api) -> VpcRouteTarget:
    """This node (CLOUD.instance_ip) in the cluster network 10.5.0.0/16."""
    return VpcRouteTarget(api, vpc_id=CLOUD.vpc_id, node_address=IPv4Address(CLOUD.instance_ip),
                          network=IPv4Network("10.5.0.0/16"))
