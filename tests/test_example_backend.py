"""examples/overlay-staticroutes, the backend written from the tutorial alone, as an outside
package: installed from (a copy of) its own directory into a directory of its own, never into the
environment the other tests use; its tests pass, the conformance kit included, and it carries pod
traffic in a lab."""

import os
import shutil

import pytest
from overlay_lab.lab import Lab

from .doc_blocks import kit_passes, pip_install_target, unit_tests_pass
from .helpers import all_pings_ok, leases, up_with_pods

EXAMPLE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples", "overlay-staticroutes")


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """A copy of the example (building leaves files in the source tree), and where it is installed."""
    pkg = tmp_path_factory.mktemp("example") / "overlay-staticroutes"
    shutil.copytree(EXAMPLE, pkg, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    target = str(tmp_path_factory.mktemp("example-site"))
    pip_install_target(str(pkg), target)
    return str(pkg), target


def test_its_unit_tests_pass(installed):
    out = unit_tests_pass(*installed)
    assert " passed" in out and "skipped" not in out


@pytest.mark.netns
@pytest.mark.etcd
def test_it_passes_the_conformance_kit(installed):
    kit_passes(*installed)


@pytest.mark.netns
@pytest.mark.etcd
def test_it_carries_pod_traffic_in_a_lab(installed, tmp_path):
    _, target = installed
    lab = Lab(f"d{os.getpid() % 10000}ex", state_root=str(tmp_path / "labs"), env={"PYTHONPATH": target})
    try:
        rows = up_with_pods(lab, nodes=3, backend="staticroutes")
        assert {r["backend"] for r in rows} == {"staticroutes"}
        all_pings_ok(lab)
        advertised = sorted(lease["value"]["BackendData"]["NextHop"] for lease in leases(lab).values())
        assert advertised == sorted(node.ip for node in lab.state.nodes)
        status = lab.readyz(lab.node(1))[1]["peer_status"]
        assert sorted(s["next_hop"] for s in status.values()) == sorted(n.ip for n in lab.state.nodes[1:])
    finally:
        lab.down()
