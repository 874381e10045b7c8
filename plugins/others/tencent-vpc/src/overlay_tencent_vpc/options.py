"""The ``Backend`` options of tencent-vpc, checked into a frozen dataclass.

Flannel's names (``AccessKeyID``, ``AccessKeySecret``) plus ours for tests and private clouds
(``ApiEndpoint``, ``MetadataURL``, ``RouteTableId``, ``RouteTableLimit``). The table ``OPTIONS``
drives the parsing. Not core's ``read_options``: its checks cannot change a value (URLs are
normalised here, an empty ``RouteTableId`` means "the first table"), it leaves unknown keys alone
(here a misspelt key is an error with a suggestion: a typo in ``RouteTableId`` would otherwise
silently pick the first table) and the credentials' environment fallback is a step after it.
Keys match case-insensitively, as Flannel's JSON decoding does.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from overlay_core import ConfigError
from overlay_core.errors import did_you_mean
from overlay_core.services import Secret

BACKEND = "tencent-vpc"
DEFAULT_API_ENDPOINT = "https://vpc.tencentcloudapi.com"
DEFAULT_METADATA_URL = "http://metadata.tencentyun.com/latest/meta-data/"
DEFAULT_ROUTE_TABLE_LIMIT = 50  # Tencent's documented number of route entries per table
ENV_KEY_ID = "ACCESS_KEY_ID"
ENV_KEY_SECRET = "ACCESS_KEY_SECRET"


@dataclass(frozen=True)
class TencentOptions:
    """Checked options. Both credentials are ``Secret`` so no repr or log line shows them."""

    access_key_id: Secret
    access_key_secret: Secret
    api_endpoint: str = DEFAULT_API_ENDPOINT
    metadata_url: str = DEFAULT_METADATA_URL
    route_table_id: str | None = None  # None: the VPC's first route table, as Flannel
    route_table_limit: int = DEFAULT_ROUTE_TABLE_LIMIT

    @property
    def endpoint_overridden(self) -> bool:
        return self.api_endpoint != DEFAULT_API_ENDPOINT


def _credential(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("must be a string")
    if value != value.strip():
        raise ValueError("must not start or end with spaces")
    return value


def _url(value: Any, *, api: bool) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("must be an http:// or https:// URL")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL with a host")
    if parts.query or parts.fragment or "@" in parts.netloc:
        raise ValueError("must be a plain URL without user, query or fragment")
    if api:
        if parts.path not in ("", "/"):
            raise ValueError("must have no path (the API is served at /)")
        return f"{parts.scheme}://{parts.netloc}"
    return value if value.endswith("/") else value + "/"


def _route_table_id(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not value.startswith("rtb-") or value != value.strip():
        raise ValueError("must be a route table id like 'rtb-0abc1234'")
    return value


def _limit(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError("must be a whole number of at least 1")
    return value


@dataclass(frozen=True)
class Option:
    """One row of the table: user-facing name, dataclass field, default, checker."""

    name: str
    field: str
    default: Any
    check: Callable[[Any], Any]
    secret: bool = False  # never echo the value in an error


OPTIONS: tuple[Option, ...] = (
    Option("AccessKeyID", "access_key_id", "", _credential, secret=True),
    Option("AccessKeySecret", "access_key_secret", "", _credential, secret=True),
    Option("ApiEndpoint", "api_endpoint", DEFAULT_API_ENDPOINT, lambda v: _url(v, api=True)),
    Option("MetadataURL", "metadata_url", DEFAULT_METADATA_URL, lambda v: _url(v, api=False)),
    Option("RouteTableId", "route_table_id", None, _route_table_id),
    Option("RouteTableLimit", "route_table_limit", DEFAULT_ROUTE_TABLE_LIMIT, _limit),
)


def _read_table(config: Mapping[str, Any]) -> dict[str, Any]:
    by_lower = {o.name.lower(): o for o in OPTIONS}
    values = {o.field: o.default for o in OPTIONS}
    for key, raw in config.items():
        if key.lower() == "type":
            continue
        option = by_lower.get(key.lower())
        if option is None:
            hint = did_you_mean(key, [o.name for o in OPTIONS])
            raise ConfigError(f"{BACKEND}: unknown option '{key}'{hint}")
        try:
            values[option.field] = option.check(raw)
        except ValueError as e:
            shown = "" if option.secret else f", got {raw!r}"
            raise ConfigError(f"{BACKEND}: {option.name} {e}{shown}") from None
    return values


def parse_options(config: Mapping[str, Any], environ: Mapping[str, str]) -> TencentOptions:
    """Check the ``Backend`` object ``config``; credentials fall back to ``environ`` as Flannel does.

    When either ``AccessKeyID`` or ``AccessKeySecret`` is empty, both are taken from
    ``ACCESS_KEY_ID`` / ``ACCESS_KEY_SECRET``. Raises ``ConfigError`` (one line, no secret).
    """
    values = _read_table(config)
    if not values["access_key_id"] or not values["access_key_secret"]:
        env = {}
        for var, option in ((ENV_KEY_ID, OPTIONS[0]), (ENV_KEY_SECRET, OPTIONS[1])):
            try:
                env[option.field] = _credential(environ.get(var, ""))
            except ValueError as e:
                raise ConfigError(f"{BACKEND}: the environment variable {var} {e}") from None
        values.update(env)
    if not values["access_key_id"] or not values["access_key_secret"]:
        raise ConfigError(
            f"{BACKEND}: no credentials: set AccessKeyID and AccessKeySecret in the Backend config "
            f"or {ENV_KEY_ID} and {ENV_KEY_SECRET} in the agent's environment"
        )
    values["access_key_id"] = Secret(values["access_key_id"])
    values["access_key_secret"] = Secret(values["access_key_secret"])
    return TencentOptions(**values)
