"""The README's main command, as a newcomer runs it: lab up with pods, ping matrix, bandwidth."""

import os
import subprocess
import sys

import pytest
from overlay_core.lab.netns import list_namespaces

pytestmark = [pytest.mark.netns, pytest.mark.etcd]


def lab_cli(*args):
    return subprocess.run([sys.executable, "-m", "overlay_core", "lab", *args], capture_output=True, text=True,
                          timeout=300)


def test_lab_up_status_down():
    name = f"cli{os.getpid() % 10000}"
    try:
        up = lab_cli("up", "--nodes", "3", "--name", name)
        assert up.returncode == 0, up.stdout + up.stderr
        out = up.stdout
        assert out.count(" vxlan ") == 3 and out.count(" yes ") == 3
        matrix = [line for line in out.splitlines() if line.startswith(("n1p1", "n2p1", "n3p1"))]
        assert len(matrix) == 3 and all(line.count("3/3") == 2 for line in matrix)
        assert "pod n1→n2 (overlay)" in out and "node n1→n2 (underlay)" in out
        status = lab_cli("status", "--name", name)
        assert status.stdout.count("running") == 3
    finally:
        down = lab_cli("down", "--name", name)
    assert down.returncode == 0 and "removed 8 namespaces" in down.stdout
    assert list_namespaces(f"ovl-{name}-") == []
