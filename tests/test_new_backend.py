"""``overlay-core new-backend`` output passes its own tests unchanged, and is the tutorial's backend
under another name (so the tutorial documents what the template writes)."""

import os
import re
import subprocess
import sys

import pytest
from overlay_lab.newbackend import Names, render

from .doc_blocks import blocks, kit_passes, pip_install_target, unit_tests_pass

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """A package written by the command, installed into a directory of its own."""
    pkg = tmp_path_factory.mktemp("generated") / "mine"
    proc = subprocess.run([sys.executable, "-m", "overlay_core", "new-backend", "my-net", "--dir", str(pkg)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "wrote backend 'my-net' (distribution overlay-my-net)" in proc.stdout
    target = str(tmp_path_factory.mktemp("generated-site"))
    pip_install_target(str(pkg), target)
    return str(pkg), target


def test_the_template_is_the_tutorial_backend_renamed():
    page = blocks(open(os.path.join(ROOT, "docs", "writing-a-backend.md")).read())
    tutorial = {b.path: b.text for b in page if b.kind == "file"}
    assert render(Names.of("hostroutes")) == tutorial


def test_its_unit_tests_pass_unchanged(generated):
    out = unit_tests_pass(*generated)
    assert re.search(r"\b4 passed\b", out), out


@pytest.mark.netns
@pytest.mark.etcd
def test_it_passes_the_conformance_kit_unchanged(generated):
    kit_passes(*generated)
