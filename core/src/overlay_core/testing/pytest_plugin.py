"""pytest fixtures for overlay and plugin authors: a real etcd, unique key prefixes, netns.

Enable with ``-p overlay_core.testing.pytest_plugin`` (the repo's root config does) or
``pytest_plugins = ["overlay_core.testing.pytest_plugin"]`` in a top-level conftest.
"""

from __future__ import annotations

import os
import shutil
import uuid

import pytest

from .etcdserver import EtcdServer, free_port


def pytest_collection_modifyitems(config, items):
    skip_root = pytest.mark.skip(reason="needs root for network namespaces")
    skip_etcd = pytest.mark.skip(reason="etcd is not installed (apt-get install etcd-server)")
    for item in items:
        if "netns" in item.keywords and os.geteuid() != 0:
            item.add_marker(skip_root)
        if "etcd" in item.keywords and not shutil.which("etcd"):
            item.add_marker(skip_etcd)


@pytest.fixture
def etcd_factory(tmp_path):
    """Start etcd servers on 127.0.0.1 with free ports; all are stopped after the test.

    Name: etcd_factory. Scope: function. Depends: tmp_path.
    """
    servers: list[EtcdServer] = []

    def start(tls: dict | None = None) -> EtcdServer:
        index = len(servers)
        server = EtcdServer(str(tmp_path / f"etcd{index}"), "127.0.0.1", free_port(), free_port(),
                            tls=tls)
        server.start(str(tmp_path / f"etcd{index}.log"))
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop(9)


@pytest.fixture(scope="session")
def shared_etcd(tmp_path_factory):
    """One etcd for the whole session; tests isolate themselves with ``etcd_prefix``."""
    if not shutil.which("etcd"):
        pytest.skip("etcd is not installed (apt-get install etcd-server)")
    base = tmp_path_factory.mktemp("shared-etcd")
    server = EtcdServer(str(base / "data"), "127.0.0.1", free_port(), free_port())
    server.start(str(base / "etcd.log"))
    yield server
    server.stop(9)


@pytest.fixture
def etcd_prefix() -> str:
    """A key prefix no other test uses."""
    return f"/test-{uuid.uuid4().hex[:12]}/coreos.com/network"
