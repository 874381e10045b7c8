"""Instance metadata: the three reads Flannel makes, and one-line errors when the service fails."""

from __future__ import annotations

import socket

import pytest
from overlay_tencent_vpc import MetadataError, read_instance_metadata
from overlay_tencent_vpc.testing import FakeCloud

CLOUD = FakeCloud()


async def test_reads_region_mac_and_vpc(metadata_server):
    meta = await read_instance_metadata(metadata_server.base_url)
    assert (meta.region, meta.mac, meta.vpc_id) == (CLOUD.region, CLOUD.mac, CLOUD.vpc_id)
    assert set(metadata_server.calls) == {
        "/latest/meta-data/placement/region",
        "/latest/meta-data/mac",
        f"/latest/meta-data/network/interfaces/macs/{CLOUD.mac}/vpc-id",
    }


@pytest.mark.parametrize("path", ["placement/region", "mac", f"network/interfaces/macs/{CLOUD.mac}/vpc-id"])
async def test_non_200_is_one_line(metadata_server, path):
    metadata_server.status[path] = 500
    with pytest.raises(MetadataError) as e:
        await read_instance_metadata(metadata_server.base_url)
    msg = str(e.value)
    assert "\n" not in msg and "HTTP 500" in msg and path in msg and "MetadataURL" in msg


async def test_empty_value_is_an_error(metadata_server):
    metadata_server.values["placement/region"] = "  \n"
    with pytest.raises(MetadataError, match="empty answer"):
        await read_instance_metadata(metadata_server.base_url)


async def test_dropped_connection_is_one_line(metadata_server):
    metadata_server.down = True
    with pytest.raises(MetadataError) as e:
        await read_instance_metadata(metadata_server.base_url, timeout=2)
    assert "cannot reach" in str(e.value) and "\n" not in str(e.value)


async def test_unreachable_is_one_line():
    with socket.socket() as s:  # a port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(MetadataError, match="cannot reach the instance metadata service"):
        await read_instance_metadata(f"http://127.0.0.1:{port}/latest/meta-data/", timeout=2)
