"""The ``Backend`` options of tencent-vpc, read with core's ``read_options`` into a frozen dataclass.

Flannel's names (``AccessKeyID``, ``AccessKeySecret``) plus ours for tests and private clouds
(``ApiEndpoint``, ``MetadataURL``, ``RouteTableId``, ``RouteTableLimit``). URLs are normalised,
an empty ``RouteTableId`` means "the first table", and the credentials fall back to the
environment as Flannel's do, a step after the reader. Misspelt keys are refused by core (the
backend declares ``option_names``): a typo in ``RouteTableId`` would otherwise silently pick the
first table. Keys match case-insensitively, as Flannel's JSON decoding does.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit

from overlay_core import ConfigError
from overlay_core.options import option, option_names, read_options
from overlay_core.services import Secret

BACKEND = "tencent-vpc"
DEFAULT_API_ENDPOINT = "https://vpc.tencentcloudapi.com"
DEFAULT_METADATA_URL = "http://metadata.tencentyun.com/latest/meta-data/"
DEFAULT_ROUTE_TABLE_LIMIT = 50  # Tencent's documented number of route entries per table
ENV_KEY_ID = "ACCESS_KEY_ID"
ENV_KEY_SECRET = "ACCESS_KEY_SECRET"


def _credential(value: Secret) -> None:
    text = value.reveal()
    if text != text.strip():
        raise ValueError("must not start or end with spaces")


def _url(value: str, *, api: bool) -> str:
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


def _route_table_id(value: str) -> str | None:
    if value == "":
        return None
    if not value.startswith("rtb-") or value != value.strip():
        raise ValueError("must be a route table id like 'rtb-0abc1234'")
    return value


def _at_least_one(value: int) -> None:
    if value < 1:
        raise ValueError("must be a whole number of at least 1")


@dataclass(frozen=True)
class TencentOptions:
    """Checked options. Both credentials are ``Secret`` so no repr or log line shows them; after
    ``parse_options`` both are set (from the config or the environment)."""

    access_key_id: Secret | None = option("AccessKeyID", None, kind=Secret, check=_credential)
    access_key_secret: Secret | None = option("AccessKeySecret", None, kind=Secret, check=_credential)
    api_endpoint: str = option("ApiEndpoint", DEFAULT_API_ENDPOINT, parse=lambda v: _url(v, api=True))
    metadata_url: str = option("MetadataURL", DEFAULT_METADATA_URL, parse=lambda v: _url(v, api=False))
    # None: the VPC's first route table, as Flannel
    route_table_id: str | None = option("RouteTableId", None, kind=str, parse=_route_table_id)
    route_table_limit: int = option("RouteTableLimit", DEFAULT_ROUTE_TABLE_LIMIT, check=_at_least_one)

    @property
    def endpoint_overridden(self) -> bool:
        return self.api_endpoint != DEFAULT_API_ENDPOINT


#: The ``Backend`` keys, as spelt in messages.
OPTION_NAMES = option_names(TencentOptions)


def parse_options(config: Mapping[str, Any], environ: Mapping[str, str]) -> TencentOptions:
    """Check the ``Backend`` object ``config``; credentials fall back to ``environ`` as Flannel does.

    When either ``AccessKeyID`` or ``AccessKeySecret`` is empty, both are taken from
    ``ACCESS_KEY_ID`` / ``ACCESS_KEY_SECRET``. Raises ``ConfigError`` (one line, no secret).
    """
    options = read_options(TencentOptions, config, backend=BACKEND)
    if not options.access_key_id or not options.access_key_secret:
        env = {}
        for var, field in ((ENV_KEY_ID, "access_key_id"), (ENV_KEY_SECRET, "access_key_secret")):
            value = Secret(environ.get(var, ""))
            try:
                _credential(value)
            except ValueError as e:
                raise ConfigError(f"{BACKEND}: the environment variable {var} {e}") from None
            env[field] = value
        options = replace(options, **env)
    if not options.access_key_id or not options.access_key_secret:
        raise ConfigError(
            f"{BACKEND}: no credentials: set AccessKeyID and AccessKeySecret in the Backend config "
            f"or {ENV_KEY_ID} and {ENV_KEY_SECRET} in the agent's environment"
        )
    return options
