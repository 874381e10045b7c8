"""Cross-package and end-to-end tests.

Rules: every end-to-end test builds its own lab (namespaces named ovl-<unique>-*, addresses
from 192.0.2.0/24 and 10.0.0.0/8 inside them), and the ``lab`` fixture tears it down, processes
included, whether the test passed or not. Nothing is ever configured in the root namespace.
"""

import itertools
import os
import re

import pytest
from overlay_core.testing.netns import delete_namespace, list_namespaces
from overlay_lab.lab import Lab

_counter = itertools.count()
_TEST_LAB = re.compile(r"ovl-t(\d+)x\d+-")


def _pytest_alive(tag: int) -> bool:
    """Is a pytest process whose pid ends in ``tag`` (pid % 10000) still running?"""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        if int(pid) % 10000 == tag:
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as fh:
                    if b"pytest" in fh.read():
                        return True
            except OSError:
                pass
    return False


@pytest.fixture(scope="session", autouse=True)
def _stale_test_labs():
    """Remove the namespaces (and their processes) of test runs that were killed outright,
    so a SIGKILLed run never leaves its labs to the next one."""
    for ns in list_namespaces("ovl-t"):
        match = _TEST_LAB.match(ns)
        if match and int(match.group(1)) != os.getpid() % 10000 and not _pytest_alive(int(match.group(1))):
            delete_namespace(ns)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Remember each phase's report on the test item (``rep_call``), for fixtures' teardown."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


def _show_agent_logs(lab: Lab, lines: int = 40) -> None:
    """Print the end of every agent's log: the lab directory goes with ``down``."""
    for node in lab.state.nodes:
        try:
            with open(node.log, errors="replace") as fh:
                tail = fh.readlines()[-lines:]
        except OSError:
            continue
        print(f"--- {lab.name} {node.name}: last {len(tail)} lines of {node.log}\n{''.join(tail)}")


@pytest.fixture
def make_lab(tmp_path, request):
    labs = []

    def make(env=None) -> Lab:
        lab = Lab(f"t{os.getpid() % 10000}x{next(_counter)}", state_root=str(tmp_path / "labs"), env=env)
        labs.append(lab)
        return lab

    yield make
    failed = getattr(request.node, "rep_call", None)
    for lab in labs:
        if failed is not None and failed.failed:
            _show_agent_logs(lab)
        lab.down()
        assert list_namespaces(lab.prefix) == [], f"namespaces of {lab.name} left behind"


@pytest.fixture
def lab(make_lab):
    return make_lab()
