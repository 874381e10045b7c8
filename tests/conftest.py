"""Cross-package and end-to-end tests.

Rules: every end-to-end test builds its own lab (namespaces named ovl-<unique>-*, addresses
from 192.0.2.0/24 and 10.0.0.0/8 inside them), and the ``lab`` fixture tears it down, processes
included, whether the test passed or not. Nothing is ever configured in the root namespace.
"""

import itertools
import os

import pytest
from overlay_core.lab.lab import Lab
from overlay_core.lab.netns import list_namespaces

_counter = itertools.count()


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
