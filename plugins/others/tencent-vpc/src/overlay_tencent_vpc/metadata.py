"""Region, MAC and VPC id of this instance, read from Tencent's instance metadata service.

The same three reads as Flannel (``placement/region``, ``mac``,
``network/interfaces/macs/<mac>/vpc-id``) under a configurable base URL. httpx's async client
runs natively under trio (through anyio), so a slow metadata service never blocks the event loop
and a trio cancel scope cancels the read. Proxies from the environment are ignored: the metadata
service is reached on the instance's own network, never through a proxy.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx
from overlay_core import OverlayError

from .options import BACKEND

METADATA_TIMEOUT = 5.0


class MetadataError(OverlayError):
    """The metadata service did not answer a read with 200 and a value."""


@dataclass(frozen=True)
class InstanceMetadata:
    region: str
    mac: str
    vpc_id: str


async def _read(client: httpx.AsyncClient, base_url: str, path: str) -> str:
    url = base_url + path
    try:
        response = await client.get(url)
    except httpx.HTTPError as e:
        raise MetadataError(
            f"{BACKEND}: cannot reach the instance metadata service at {url} ({type(e).__name__}); "
            "check MetadataURL and that this node runs in a TencentCloud VPC"
        ) from None
    value = response.text.strip()
    if response.status_code != 200 or not value:
        got = f"HTTP {response.status_code}" if response.status_code != 200 else "an empty answer"
        raise MetadataError(f"{BACKEND}: the instance metadata service gave {got} for {url}; check MetadataURL")
    return value


async def read_instance_metadata(base_url: str, timeout: float = METADATA_TIMEOUT) -> InstanceMetadata:
    """Read region, MAC and VPC id; raise ``MetadataError`` (one line) on any failure."""
    # verify only matters for an https MetadataURL; for http it spares loading a CA store (~0.1 s)
    async with httpx.AsyncClient(timeout=timeout, trust_env=False, verify=base_url.startswith("https:")) as client:
        region = await _read(client, base_url, "placement/region")
        mac = await _read(client, base_url, "mac")
        vpc_id = await _read(client, base_url, f"network/interfaces/macs/{mac}/vpc-id")
    return InstanceMetadata(region=region, mac=mac, vpc_id=vpc_id)
