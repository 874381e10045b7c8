"""Cross-package and end-to-end tests.

Rules: every end-to-end test builds its own lab (namespaces named ovl-<unique>-*, addresses
from 192.0.2.0/24 and 10.0.0.0/8 inside them), and the ``lab`` fixture tears it down, processes
included, whether the test passed or not. Nothing is ever configured in the root namespace.
"""

import itertools
import os
import re

import pytest
from overlay_core.lab.lab import Lab
from overlay_core.lab.netns import delete_namespace, list_namespaces

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


@pytest.fixture
def make_lab(tmp_path):
    labs = []

    def make(env=None) -> Lab:
        lab = Lab(f"t{os.getpid() % 10000}x{next(_counter)}", state_root=str(tmp_path / "labs"), env=env)
        labs.append(lab)
        return lab

    yield make
    for lab in labs:
        lab.down()
        assert list_namespaces(lab.prefix) == [], f"namespaces of {lab.name} left behind"


@pytest.fixture
def lab(make_lab):
    return make_lab()
