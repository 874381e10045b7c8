"""Meta-tests: every hook is documented (When:/Returns:) and exercised by some test."""

import pathlib

from overlay_core import hookspecs
from overlay_core.plugins import PluginManager

REPO = pathlib.Path(__file__).resolve().parents[2]


def hook_names():
    return sorted(n for n in dir(hookspecs) if n.startswith("overlay_"))


def test_hookspecs_documented():
    pm = PluginManager().pm
    assert set(hook_names()) == {n for n in dir(pm.hook) if n.startswith("overlay_")}
    for name in hook_names():
        doc = getattr(hookspecs, name).__doc__ or ""
        assert "When:" in doc and "Returns:" in doc, name


def test_hookspecs_have_tests():
    sources = "".join(p.read_text() for p in REPO.rglob("*.py")
                      if "test" in p.parts[-2] or p.parts[-2] == "overlay_demo" or "tests" in p.parts)
    missing = [n for n in hook_names() if n not in sources]
    assert missing == []
