"""No credential in any log line (DEBUG included, the SDK's and httpx's too), error or repr."""

from __future__ import annotations

import logging
from ipaddress import IPv4Network

from overlay_core import OverlayError
from overlay_core.reconcile import converge
from overlay_tencent_vpc import VpcApi, VpcRouteTarget, parse_options
from overlay_tencent_vpc.testing import FakeCloud

CLOUD = FakeCloud()
SUBNET_TEXT = "10.5.1.0/24"


async def test_secret_never_reaches_logs_or_errors(caplog, vpc, vpc_server, options, target, fast_retry):
    caplog.set_level(logging.DEBUG)
    errors: list[OverlayError] = []
    subnet = IPv4Network(SUBNET_TEXT)

    async def attempt(t: VpcRouteTarget, desired) -> None:
        try:
            await converge(t, desired)
        except OverlayError as e:
            errors.append(e)

    # the happy path, drift, throttling, 5xx, a dropped connection, a conflict, a full table
    await attempt(target, [target.route_for(subnet)])
    vpc.console_disable(CLOUD.table_id, SUBNET_TEXT)
    vpc.faults.throttle, vpc.faults.server_error = 1, 1
    await attempt(target, [target.route_for(subnet)])
    vpc.faults.down = True
    await attempt(target, [target.route_for(subnet)])
    vpc.faults.down = False
    vpc.console_add(CLOUD.table_id, "10.5.2.0/24", "192.0.2.99")
    await attempt(target, [target.route_for(IPv4Network("10.5.2.0/24"))])
    target.limit = 1
    await attempt(target, [target.route_for(IPv4Network("10.5.3.0/24"))])
    # a wrong secret key, and credentials that come from the environment
    bad = parse_options({"ApiEndpoint": vpc_server.url},
                        {"ACCESS_KEY_ID": CLOUD.secret_id, "ACCESS_KEY_SECRET": CLOUD.secret_key + "x"})
    async with VpcApi(bad, CLOUD.region, retry=fast_retry) as api:
        other = VpcRouteTarget(api, vpc_id=CLOUD.vpc_id, node_address=target.node_address, network=target.network)
        await attempt(other, [target.route_for(subnet)])

    assert len(errors) == 2 and target.problem
    seen = [caplog.text, target.problem, repr(options), str(options), repr(bad), repr(target.__dict__)]
    seen += [str(e) for e in errors] + [repr(e) for e in errors]
    seen += [str(e.__context__) for e in errors if e.__context__ is not None]
    assert "CreateRoutes" in caplog.text  # the logs were captured at all
    for text in seen:
        assert CLOUD.secret_key not in text and CLOUD.secret_id not in text


async def test_sdk_debug_logging_is_capped(caplog, api):
    caplog.set_level(logging.DEBUG)
    await api.describe_route_tables(vpc_id=CLOUD.vpc_id)
    assert "Authorization" not in caplog.text and "TC3-HMAC-SHA256" not in caplog.text
