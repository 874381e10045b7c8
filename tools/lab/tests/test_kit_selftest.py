"""The conformance kit catches broken backends: each of two deliberately broken backends
(tests/kit-broken) fails exactly the kit check its bug breaks, and passes the others run here."""

import os
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

BROKEN = os.path.join(os.path.dirname(__file__), "kit-broken")
CHECKS = "ping_each_other or peer_added or drift"
KIT_TESTS = """\
from overlay_core.testing.kit import Conformance


class TestForgetsRemovals(Conformance):
    backend = "kit-noremove"


class TestNeverRepairs(Conformance):
    backend = "kit-nodrift"
"""

pytestmark = [pytest.mark.netns, pytest.mark.etcd]


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    """Run the kit on both broken backends (installed in a directory of their own, found by entry
    point alone) in a pytest of its own; the outcome of each (class, test) and the run's output."""
    tmp = tmp_path_factory.mktemp("kit-selftest")
    site = tmp / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(site), BROKEN], check=True, capture_output=True)
    (tmp / "test_broken.py").write_text(KIT_TESTS)
    report = tmp / "report.xml"
    run = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-k", CHECKS,
                          f"--junitxml={report}", "-o", "junit_family=xunit1", str(tmp / "test_broken.py")],
                         cwd=tmp, env={**os.environ, "PYTHONPATH": str(site)}, capture_output=True, text=True,
                         timeout=1200)
    results = {}
    for case in ET.parse(report).iter("testcase"):
        kind = next((child.tag for child in case if child.tag in ("failure", "error", "skipped")), "passed")
        results[(case.get("classname").rsplit(".", 1)[-1], case.get("name"))] = kind
    return results, run.stdout


def test_a_backend_that_forgets_removals_fails_the_peer_check_only(outcomes):
    results, output = outcomes
    assert results[("TestForgetsRemovals", "test_peer_added_changed_removed")] == "failure", output
    assert "to remove every object naming the removed peer" in output
    assert results[("TestForgetsRemovals", "test_pods_on_three_nodes_ping_each_other")] == "passed", output
    assert results[("TestForgetsRemovals", "test_drift_is_repaired")] == "passed", output


def test_a_backend_that_never_repairs_drift_fails_the_drift_check_only(outcomes):
    results, output = outcomes
    assert results[("TestNeverRepairs", "test_drift_is_repaired")] == "failure", output
    assert "waiting for the deleted object to be put back" in output
    assert results[("TestNeverRepairs", "test_pods_on_three_nodes_ping_each_other")] == "passed", output
    assert results[("TestNeverRepairs", "test_peer_added_changed_removed")] == "passed", output
