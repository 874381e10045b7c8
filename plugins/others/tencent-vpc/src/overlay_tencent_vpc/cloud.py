"""The three VPC API actions the backend needs, through the official SDK, with retries.

Choice: the SDK's *async* client (``vpc_client_async.VpcClient``) runs natively under trio,
because its HTTP layer is httpx and httpx runs on anyio. Every call is then cancellable by a
trio cancel scope and costs no thread; the sync client would need ``trio.to_thread`` with a
CapacityLimiter, and a call stuck in a thread cannot be cancelled. The SDK signs every request
(TC3-HMAC-SHA256); this module never touches signing. The SDK's own ``retryer`` is asyncio-only
(``retry_async`` sleeps with ``asyncio.sleep``), so retries are done here with ``trio.sleep``.

Retried with backoff: throttling (``RequestLimitExceeded*``), server errors (``InternalError*``,
non-200 answers) and network errors. Not retried: authentication (``AuthFailure.*``) and
permission (``UnauthorizedOperation*``) refusals, raised as ``VpcAuthError`` (one line), and any
other API error, raised as ``VpcApiError``. No message carries a credential.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import trio
from overlay_core import ConfigError, OverlayError
from overlay_core.retry import Backoff
from tencentcloud.common import credential
from tencentcloud.common.abstract_client import LOGGER_NAME as SDK_LOGGER_NAME
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile
from tencentcloud.vpc.v20170312 import models, vpc_client_async

from .options import BACKEND, TencentOptions

log = logging.getLogger(__name__)

API_TIMEOUT = 10.0
IAM_ACTIONS = ("vpc:DescribeRouteTables", "vpc:CreateRoutes", "vpc:DeleteRoutes")


class VpcApiError(OverlayError):
    """The VPC API refused a call. ``code`` is Tencent's error code."""

    def __init__(self, message: str, code: str = "") -> None:
        super().__init__(message)
        self.code = code


class VpcAuthError(ConfigError, VpcApiError):
    """Credentials refused (``AuthFailure.*``) or not allowed the action (``UnauthorizedOperation*``)."""


class VpcUnavailableError(VpcApiError):
    """Throttled, server errors or unreachable on every attempt; the next reconcile tries again."""


@dataclass(frozen=True)
class RetryPolicy:
    """``attempts`` calls at most, spaced by core's ``Backoff``: ``first_delay`` doubling up to
    ``max_delay``, each spread by ±50 %."""

    attempts: int = 5
    first_delay: float = 0.2
    max_delay: float = 5.0

    def delays(self, rand: random.Random) -> Iterator[float]:
        """The sleeps between attempts (one fewer than ``attempts``)."""
        backoff = Backoff(self.first_delay, self.max_delay, rand=rand)
        for _ in range(self.attempts - 1):
            yield backoff.next()


@dataclass(frozen=True)
class ApiRoute:
    """One route entry as DescribeRouteTables reports it."""

    destination: str
    gateway_type: str
    gateway_id: str
    route_id: int
    route_item_id: str
    enabled: bool
    route_type: str


@dataclass(frozen=True)
class ApiRouteTable:
    table_id: str
    vpc_id: str
    routes: tuple[ApiRoute, ...]


def _retryable(code: str) -> bool:
    return code.startswith(("RequestLimitExceeded", "InternalError", "ServiceUnavailable")) or code in (
        "ServerNetworkError",  # the SDK's code for a non-200 HTTP answer (a 5xx from a gateway)
        "ResourceUnavailable",
    )


def _auth_refused(code: str) -> bool:
    return code.startswith(("AuthFailure", "UnauthorizedOperation"))


class VpcApi:
    """DescribeRouteTables, CreateRoutes and DeleteRoutes for one region; ``calls`` counts requests per action.

    Use ``async with VpcApi(...) as api`` (or ``await api.aclose()``) inside the trio run that
    makes the calls: the underlying httpx client holds sockets bound to that run.
    """

    def __init__(
        self,
        options: TencentOptions,
        region: str,
        *,
        retry: RetryPolicy = RetryPolicy(),
        timeout: float = API_TIMEOUT,
        rand: random.Random | None = None,
    ) -> None:
        self.endpoint = options.api_endpoint
        self.region = region
        self.retry = retry
        self.calls: Counter[str] = Counter()
        self.retries: Counter[str] = Counter()
        self._rand = rand or random.Random()
        self._secrets = (options.access_key_id.reveal(), options.access_key_secret.reveal())
        # The SDK logs whole signed requests (the AccessKeyID in the Authorization header) at DEBUG.
        sdk_log = logging.getLogger(SDK_LOGGER_NAME)
        sdk_log.setLevel(max(sdk_log.level, logging.INFO))
        url = urlsplit(options.api_endpoint)
        http = HttpProfile(protocol=url.scheme, endpoint=url.netloc, reqTimeout=timeout)
        # The httpx client the SDK makes is replaced below, before any request; "no certificate
        # check" only spares building it a CA store (about 0.1 s of CPU per client).
        http.certification = False
        profile = ClientProfile(httpProfile=http, language="en-US")
        profile.disable_region_breaker = True  # on, it would fall back to ap-guangzhou's public endpoint
        cred = credential.Credential(*self._secrets)
        self._client = vpc_client_async.VpcClient(cred, region, profile)
        # Ours: certificates checked for https (no TLS at all for http), keep-alive off as the SDK
        # sets it, HTTP(S)_PROXY honoured only for Tencent's public endpoint: an overridden one (a
        # private cloud, the lab's fake) is reached directly.
        self._client.http_client = httpx.AsyncClient(
            timeout=timeout,
            limits=httpx.Limits(max_keepalive_connections=0),
            trust_env=not options.endpoint_overridden,
            verify=url.scheme == "https",
        )

    async def __aenter__(self) -> VpcApi:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.http_client.aclose()

    def _scrub(self, text: Any) -> str:
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        text = " ".join(str(text).split())[:200]
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    async def _call(self, action: str, request: Any) -> Any:
        method = getattr(self._client, action)
        delays = self.retry.delays(self._rand)
        while True:
            self.calls[action] += 1
            try:
                return await method(request)
            except TencentCloudSDKException as e:
                code, detail = str(e.code or ""), self._scrub(e.message)
                if _auth_refused(code):
                    raise VpcAuthError(
                        f"{BACKEND}: the VPC API at {self.endpoint} refused {action} ({code}: {detail}); check "
                        f"AccessKeyID/AccessKeySecret and that the key may call {', '.join(IAM_ACTIONS)}",
                        code,
                    ) from None
                if not _retryable(code):
                    raise VpcApiError(f"{BACKEND}: {action} failed: {code}: {detail}", code) from None
                last = f"{code}: {detail}"
            except httpx.TransportError as e:
                code, last = "NetworkError", f"{type(e).__name__}: {self._scrub(e)}"
            delay = next(delays, None)
            if delay is None:
                raise VpcUnavailableError(
                    f"{BACKEND}: {action} at {self.endpoint} failed {self.retry.attempts} times, last {last}; "
                    "retried at the next reconcile",
                    code,
                )
            self.retries[action] += 1
            log.debug("%s: %s, retry in %.2fs", action, last, delay)
            await trio.sleep(delay)

    async def describe_route_tables(
        self, *, vpc_id: str | None = None, table_id: str | None = None
    ) -> list[ApiRouteTable]:
        """The route tables of a VPC (the API's first page, as Flannel reads), or the one table ``table_id``."""
        request = models.DescribeRouteTablesRequest()
        if table_id is not None:
            request.RouteTableIds = [table_id]
        if vpc_id is not None:
            f = models.Filter()
            f.Name, f.Values = "vpc-id", [vpc_id]
            request.Filters = [f]
        response = await self._call("DescribeRouteTables", request)
        return [
            ApiRouteTable(
                table_id=t.RouteTableId,
                vpc_id=t.VpcId,
                routes=tuple(
                    ApiRoute(
                        destination=r.DestinationCidrBlock or "",
                        gateway_type=r.GatewayType or "",
                        gateway_id=r.GatewayId or "",
                        route_id=r.RouteId,
                        route_item_id=r.RouteItemId or "",
                        enabled=bool(r.Enabled),
                        route_type=r.RouteType or "",
                    )
                    for r in t.RouteSet or ()
                ),
            )
            for t in response.RouteTableSet or ()
        ]

    async def create_routes(self, table_id: str, routes: Sequence[tuple[str, str, str]], description: str) -> None:
        """CreateRoutes for ``(destination, gateway type, gateway id)`` triples, enabled."""
        request = models.CreateRoutesRequest()
        request.RouteTableId = table_id
        request.Routes = []
        for destination, gateway_type, gateway_id in routes:
            r = models.Route()
            r.DestinationCidrBlock, r.GatewayType, r.GatewayId = destination, gateway_type, gateway_id
            r.Enabled, r.RouteDescription = True, description
            request.Routes.append(r)
        await self._call("CreateRoutes", request)

    async def delete_routes(self, table_id: str, route_ids: Sequence[int]) -> None:
        """DeleteRoutes by RouteId."""
        request = models.DeleteRoutesRequest()
        request.RouteTableId = table_id
        request.Routes = []
        for route_id in route_ids:
            r = models.Route()
            r.RouteId = route_id
            request.Routes.append(r)
        await self._call("DeleteRoutes", request)
