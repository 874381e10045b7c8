"""The stand-in VPC as the lab's router: API changes mirrored into a namespace's kernel table."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from ipaddress import IPv4Network

import pytest
import trio
from overlay_core.reconcile import converge
from overlay_core.testing.netns import add_namespace, delete_namespace, ip
from overlay_tencent_vpc import VpcApi, parse_options
from overlay_tencent_vpc.testing import FakeCloud, FakeVpcServer, KernelRoutes

CLOUD = FakeCloud()
SUBNET = IPv4Network("10.5.1.0/24")

pytestmark = pytest.mark.netns


@pytest.fixture
def router() -> Iterator[str]:
    """A namespace with a veth on the underlay 192.0.2.0/24, like the lab's VPC router; always removed."""
    ns = f"tct-{os.getpid()}-rt"
    add_namespace(ns)
    try:
        ip("link", "add", "u0", "type", "veth", "peer", "name", "u1", ns=ns)
        ip("addr", "add", "192.0.2.254/24", "dev", "u0", ns=ns)
        ip("link", "set", "u0", "up", ns=ns)
        ip("link", "set", "u1", "up", ns=ns)
        yield ns
    finally:
        delete_namespace(ns)


def kernel_route(ns: str) -> str:
    return ip("route", "show", str(SUBNET), ns=ns).strip()


def test_refuses_unknown_namespace():
    with pytest.raises(ValueError, match="no network namespace"):
        KernelRoutes("tct-does-not-exist")


async def test_api_changes_reach_the_kernel_table(router, target):
    vpc = CLOUD.vpc(on_change=KernelRoutes(router))
    with FakeVpcServer(vpc) as server:
        opts = parse_options(CLOUD.backend_config(server.url, "http://127.0.0.1:9/"), {})
        async with VpcApi(opts, CLOUD.region) as api:
            target.api = api
            await converge(target, [target.route_for(SUBNET)])
            assert kernel_route(router) == f"{SUBNET} via {CLOUD.instance_ip} dev u0"
            vpc.console_disable(CLOUD.table_id, str(SUBNET))
            assert kernel_route(router) == ""
            await converge(target, [target.route_for(SUBNET)])
            assert kernel_route(router).startswith(f"{SUBNET} via {CLOUD.instance_ip}")
            await converge(target, [])
            assert kernel_route(router) == ""
    assert vpc.on_change.errors == []


async def test_as_a_process(router, target):
    cmd = [sys.executable, "-m", "overlay_tencent_vpc.testing", "--route-netns", router]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        urls = json.loads(await trio.to_thread.run_sync(proc.stdout.readline))
        opts = parse_options(CLOUD.backend_config(urls["api_url"], urls["metadata_url"]), {})
        async with VpcApi(opts, CLOUD.region) as api:
            target.api = api
            await converge(target, [target.route_for(SUBNET)])
        assert kernel_route(router).startswith(f"{SUBNET} via {CLOUD.instance_ip}")
        proc.send_signal(signal.SIGTERM)
        assert await trio.to_thread.run_sync(lambda: proc.wait(timeout=10)) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
