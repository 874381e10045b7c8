"""The README's main command, as a newcomer runs it: lab up with pods, ping matrix, bandwidth."""

import os
import subprocess
import sys

import pytest
from overlay_core.errors import OverlayError
from overlay_core.testing.netns import list_namespaces

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
        assert "ping matrix (received/sent, IPv4):" in out  # "both families" only for dual-stack labs
        assert "pod n1→n2 (overlay)" in out and "node n1→n2 (underlay)" in out
        status = lab_cli("status", "--name", name)
        assert status.returncode == 0 and status.stdout.count("running") == 3
        again = lab_cli("up", "--nodes", "2", "--name", name)
        assert again.returncode == 1 and again.stderr == (
            f"overlay-core: error: lab {name!r} is already up: take it down first "
            f"(overlay-core lab down --name {name}), or replace it with --replace\n")
        assert lab_cli("status", "--name", name).stdout.count("running") == 3  # untouched
    finally:
        down = lab_cli("down", "--name", name)
    assert down.returncode == 0 and "removed 8 namespaces" in down.stdout
    assert list_namespaces(f"ovl-{name}-") == []


@pytest.mark.parametrize("args, message", [
    (("--nodes", "1"), "--nodes 1 with pods: the ping matrix needs at least 2 nodes"),
    (("--nodes", "0", "--pods", "0"), "--nodes 0: a lab needs at least one node"),
    (("--nodes", "-2"), "--nodes -2: a lab needs at least one node"),
    (("--pods", "-1"), "--pods -1: use 0 (no pods) or more"),
    (("--backend", "alloc"), "--backend alloc programs no data plane"),
    (("--backend", "host-gw", "--remote-nodes", "1"), "--backend host-gw needs every node on one L2 segment"),
])
def test_lab_up_refuses_what_cannot_work_before_building_anything(args, message):
    name = f"t{os.getpid() % 10000}x9{abs(hash(args)) % 1000}"
    try:
        bad = lab_cli("up", "--name", name, *args)
        assert bad.returncode == 1 and bad.stderr.startswith(f"overlay-core: error: {message}")
        assert bad.stderr.count("\n") == 1 and bad.stdout == ""
        assert list_namespaces(f"ovl-{name}-") == []
    finally:  # should the refusal fail, the lab it built goes too
        lab_cli("down", "--name", name)


def test_lab_status_without_a_lab_fails_and_up_help_shows_defaults():
    status = lab_cli("status", "--name", f"t{os.getpid() % 10000}x99")
    assert status.returncode == 1 and "is not up" in status.stderr
    usage = lab_cli("up", "--help").stdout
    for default in ("(default: 3)", "(default: vxlan)", "10.5.0.0/16)", "(default: 1)", "(default: 60.0)"):
        assert default in usage


def test_failed_lab_up_keeps_the_logs_it_points_to(lab):
    with pytest.raises(OverlayError) as info:
        lab.up(nodes=1, backend="nope")
    text = str(info.value)
    assert "agent on n1 exited" in text and "backend type 'nope' is unknown" in text
    assert text.endswith(f"its logs are kept in {lab.dir} (remove them with: overlay-core lab down --name {lab.name})")
    assert "backend type 'nope' is unknown" in open(os.path.join(lab.dir, "n1", "agent.log")).read()
    assert list_namespaces(lab.prefix) == [] and lab.status() == []
    lab.down()
    assert not os.path.exists(lab.dir)


def test_lab_up_does_not_silently_replace_a_lab(lab):
    lab.up(nodes=1, backend="alloc", start_agents=False)
    with pytest.raises(OverlayError, match="is already up: take it down first"):
        lab.up(nodes=1, backend="alloc", start_agents=False)
    assert len(list_namespaces(lab.prefix)) == 3
    lab.up(nodes=2, backend="alloc", start_agents=False, replace=True)
    assert len(lab.state.nodes) == 2
