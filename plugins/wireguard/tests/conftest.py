"""Fixtures of the wireguard tests: a ``WgNet`` (namespaces ``wgt-<pid>-<n>-*``) torn down
whatever happens, and a guard that no namespace of ours outlives its test."""

import itertools
import os
import shutil

import pytest
from overlay_core.testing.netns import delete_namespace, list_namespaces
from overlay_wireguard.testing import WgNet

_counter = itertools.count()


@pytest.fixture(scope="session", autouse=True)
def _stale_namespaces():
    """Namespaces left by an earlier run of this machine's tests that was killed outright."""
    mine = f"wgt-{os.getpid()}-"
    for ns in list_namespaces("wgt-"):
        if not ns.startswith(mine):
            pid = ns.split("-")[1]
            if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
                delete_namespace(ns)


@pytest.fixture
def wgnet(tmp_path):
    if not shutil.which("wireguard-go"):
        pytest.skip("wireguard-go is not installed (apt-get install wireguard-go)")
    prefix = f"wgt-{os.getpid()}-{next(_counter)}"
    net = WgNet(prefix, tmp_path)
    try:
        yield net
    finally:
        net.close()
        assert list_namespaces(prefix + "-") == [], "namespaces left behind"
